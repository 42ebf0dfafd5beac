"""The session view: a client's activity on one service over a sliding window of time.

One flow is the wrong unit for short-form video: a Shorts player opens a new connection
every half minute or so, and one long-form connection lives for minutes. This module
groups a capture's per-(flow, second) rows (``featurize`` with ``window=1``) by
``(client, group)`` and describes each sliding window (``SessionConfig.window`` seconds,
every ``step`` seconds) by the shape of the traffic across all its flows:

* how much comes down and how much of the time something comes down (``active_share``);
* download bursts across connections (runs of busy seconds): how many, their
  sizes, and how regular the gaps between their starts are (a long-form player fetches on a
  steady clock once its buffer is full; a swipe does not);
* connections: how many carry media, how many of those opened in the window, how long they
  have lived, and the share of the largest one.

Counts are per window, not per minute: the first windows of a session are shorter, so they
count less (an early verdict needs more evidence, never less).

No input depends on the handshake, on packet sizes above the MTU, or on the transport: the
view reads byte counts per second and flow start/end times only, so a header-only record,
a flow that started before the capture and a coalesced frame give the same figures.

``group`` is the flow's ``service`` when its name is known (and ``use_names`` is set),
else the service that named flows reached the same server address on (when they all name
one: a flow that began before the capture, or one without SNI, to a video server whose
other connections were named), else the server's network: the smallest block routed
on its own across the internet, ``net:a.b.c.0/24`` for IPv4 (``unnamed_prefix`` bits; 0
pools every nameless flow of the client as ``"unnamed"``) and ``net:2001:db8:1::/48`` for
IPv6 (``unnamed_prefix6``). An IPv6 address that carries an IPv4 one under the NAT64
prefixes (``64:ff9b::/96``, ``64:ff9b:1::/48``: a client on an IPv6-only network reaching
an IPv4 server) is grouped by that IPv4 address's network, as it would be reached
directly; every other IPv6 address by its /48.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pandas is imported where a table is made: live mode runs without it
    import pandas as pd

__all__ = [
    "SessionConfig",
    "FlowSeconds",
    "window_records",
    "SESSION_FEATURES",
    "SESSION_KEYS",
    "ACTIVITY_COLUMNS",
    "WINDOW_COLUMNS",
    "session_groups",
    "session_table",
    "latest_windows",
    "group_of",
    "server_services",
    "is_named",
]

SESSION_FEATURES = (
    "down_mbps",
    "active_share",
    "bursts",
    "burst_mb_median",
    "burst_mb_max",
    "burst_gap_median",
    "burst_gap_cv",
    "media_flows",
    "new_media_flows",
    "media_age_median",
    "mb_per_media_flow",
    "top_flow_share",
)
"""Model inputs of the session view, in order."""

SESSION_KEYS = ("client", "group", "window_start", "window_end")
WINDOW_COLUMNS = (*SESSION_KEYS, "session_start", "window_bytes", "bytes_step", *SESSION_FEATURES)
"""Columns of a session window row: keys, where the session began, bytes down in the
window and in its last ``step`` seconds, and the features."""
ACTIVITY_COLUMNS = (
    "client",
    "server",
    "service",
    "category",
    "flow_id",
    "first_ts",
    "window_start",
    "bytes_down",
)
"""Columns of the per-(flow, second) rows the view reads."""

_UNNAMED = "unnamed"
_NO_SERVICE = ("", "unknown")


@dataclass(frozen=True)
class SessionConfig:
    """``window``/``step``: seconds; ``busy_bytes``: a second with at least this many bytes
    down is busy (part of a burst); ``media_bytes``: a flow with at least this many bytes
    down in the window carries media; ``min_bytes``: windows with less down are not
    described (nothing to judge); ``use_names``: group named flows by service;
    ``unnamed_prefix`` / ``unnamed_prefix6``: prefix lengths of a nameless flow's server
    network for IPv4 / IPv6 (``unnamed_prefix`` 0: one group of every nameless flow)."""

    window: float = 60.0
    step: float = 10.0
    busy_bytes: float = 50_000.0
    media_bytes: float = 300_000.0
    min_bytes: float = 100_000.0
    use_names: bool = True
    unnamed_prefix: int = 24
    unnamed_prefix6: int = 48

    def __post_init__(self) -> None:
        if not 0 < self.step <= self.window:
            raise ValueError("session step must be positive and no longer than the window")
        if not 0 <= self.unnamed_prefix <= 128:
            raise ValueError("unnamed_prefix must be 0..128")
        if not 0 <= self.unnamed_prefix6 <= 128:
            raise ValueError("unnamed_prefix6 must be 0..128")


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
"""The well-known and the local-use NAT64 prefixes (RFC 6052, RFC 8215): an IPv4 address
in the last 32 bits."""


def _net(server: str, config: SessionConfig) -> str:
    """The group of a nameless flow to ``server``: its network, as the module says."""
    if not config.unnamed_prefix:
        return _UNNAMED
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(server)
    except ValueError:
        return _UNNAMED
    if isinstance(addr, ipaddress.IPv6Address) and any(addr in net for net in _NAT64):
        addr = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    bits = config.unnamed_prefix if addr.version == 4 else config.unnamed_prefix6
    bits = min(bits, addr.max_prefixlen)
    return "net:" + str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def is_named(service: object) -> TypeGuard[str]:
    """Whether ``service`` (a flow's service column) names a service."""
    return isinstance(service, str) and service not in _NO_SERVICE


def server_services(
    pairs: Iterable[tuple[str, str]], known: dict[str, str] | None = None
) -> dict[str, str]:
    """Per server address of the (server, service) ``pairs`` of named flows: the service,
    or ``""`` where flows named two services on one address (a shared front end lends no
    name). Added to ``known`` (an earlier result, updated in place) when given."""
    out = {} if known is None else known
    for server, service in pairs:
        seen = out.get(server)
        out[server] = service if seen is None or seen == service else ""
    return out


def group_of(
    service: str | None, server: str, config: SessionConfig, lent: Mapping[str, str] | None = None
) -> str:
    """The session group of one flow (as :func:`session_groups` gives for a row);
    ``lent``: :func:`server_services` of the named flows seen."""
    if config.use_names:
        if is_named(service):
            return service
        borrowed = lent.get(server) if lent else None
        if borrowed:
            return borrowed
    return _net(server, config)


def session_groups(rows: pd.DataFrame, config: SessionConfig) -> pd.Series:
    """The session group of each row: its service, the service named flows reached its
    server on (:func:`server_services` over all the rows), or ``"unnamed"`` / its server
    network."""
    import pandas as pd

    service = rows["service"].fillna("").astype(str)
    named = ~service.isin(_NO_SERVICE) if config.use_names else pd.Series(False, index=rows.index)
    if named.any() and not named.all():
        pairs = pd.DataFrame({"server": rows["server"][named], "service": service[named]})
        pairs = pairs.drop_duplicates()
        lent = server_services(zip(pairs["server"], pairs["service"], strict=True))
        borrowed = rows["server"].map(lent).fillna("").astype(str)
        takes = ~named & (borrowed != "")
        service = service.where(~takes, borrowed)
        named = named | takes
    nets = {s: _net(s, config) for s in rows["server"].unique()}
    return service.where(named, rows["server"].map(nets))


def _runs(busy: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Starts and ends (exclusive) of runs of busy bins, a single idle bin bridged."""
    b = busy.copy()
    if len(b) > 2:
        b[1:-1] |= busy[:-2] & busy[2:]
    edges = np.diff(np.concatenate(([0], b.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


@dataclass(frozen=True, slots=True)
class _Group:
    t0: float  # the group's first second (absolute time)
    down: npt.NDArray[np.float64]  # bytes down per second since t0
    flow_bins: npt.NDArray[np.int64]  # per row: second index
    flow_idx: npt.NDArray[np.int64]  # per row: flow index
    flow_bytes: npt.NDArray[np.float64]  # per row: bytes down
    first: npt.NDArray[np.float64]  # per flow: first packet, seconds since t0


def _group(part: pd.DataFrame) -> _Group:
    """Bins of one group's rows from its first second."""
    import pandas as pd

    t_abs = part["first_ts"].to_numpy(float) + part["window_start"].to_numpy(float)
    codes = pd.factorize(part["flow_id"])[0]
    first = part.groupby(codes)["first_ts"].first().to_numpy(float)
    return _binned(t_abs, part["bytes_down"].to_numpy(float), codes, first, None, None)


def _binned(
    t_abs: npt.NDArray[np.float64],
    nbytes: npt.NDArray[np.float64],
    codes: npt.NDArray[np.intp],
    first_ts: npt.NDArray[np.float64],
    t0: float | None,
    nbins: int | None,
) -> _Group:
    """Bins of one group from ``t0`` (default: its first second): per row its absolute
    second ``t_abs``, bytes down and flow code; per flow code its first packet. Rows
    before ``t0`` or past ``nbins`` must have been dropped by the caller."""
    t0 = math.floor(float(t_abs.min())) if t0 is None else t0
    bins = np.floor(t_abs - t0).astype(np.int64)
    nbins = int(bins.max()) + 1 if nbins is None else nbins
    down = np.bincount(bins, weights=nbytes, minlength=nbins).astype(np.float64)
    return _Group(float(t0), down, bins, codes.astype(np.int64), nbytes, first_ts - t0)


def _features(g: _Group, lo: int, hi: int, config: SessionConfig) -> list[float]:
    span = float(hi - lo)
    down = g.down[lo:hi]
    total = float(down.sum())
    busy = down >= config.busy_bytes
    starts, ends = _runs(busy)
    sizes = np.array([down[s:e].sum() for s, e in zip(starts, ends, strict=True)])
    gaps = np.diff(starts).astype(float)
    in_win = (g.flow_bins >= lo) & (g.flow_bins < hi)
    per_flow = np.bincount(g.flow_idx[in_win], weights=g.flow_bytes[in_win], minlength=len(g.first))
    media = np.flatnonzero(per_flow >= config.media_bytes)
    new_media = int(np.count_nonzero(g.first[media] >= lo)) if len(media) else 0
    last_bin = np.full(len(g.first), -1, dtype=np.int64)
    np.maximum.at(last_bin, g.flow_idx[in_win], g.flow_bins[in_win])
    ages = (last_bin[media] + 1) - g.first[media]  # to the end of its last busy second
    mb = 1e-6
    return [
        total * 8 / span / 1e6,
        float(busy.mean()),
        float(len(starts)),
        float(np.median(sizes)) * mb if len(sizes) else 0.0,
        float(sizes.max()) * mb if len(sizes) else 0.0,
        float(np.median(gaps)) if len(gaps) else span,
        float(gaps.std() / gaps.mean()) if len(gaps) >= 2 else 0.0,
        float(len(media)),
        float(new_media),
        float(np.median(ages)) if len(media) else 0.0,
        float(per_flow[media].mean()) * mb if len(media) else 0.0,
        float(per_flow.max() / total) if total > 0 else 0.0,
    ]


def session_table(rows: pd.DataFrame, config: SessionConfig | None = None) -> pd.DataFrame:
    """One row per (client, group, window) with ``SESSION_FEATURES``.

    ``rows``: per-(flow, second) rows (``featurize`` with ``window=1``; only
    ``ACTIVITY_COLUMNS`` are read). Windows end every ``step`` seconds from the group's
    first second + ``step`` until its last second is covered; the first windows are
    shorter than ``window`` (``window_start`` says where each begins). Windows with less
    than ``min_bytes`` down are left out. Besides the keys and features, each row has
    ``window_bytes`` (bytes down in the window), ``bytes_step`` (those of its last ``step``
    seconds: what a verdict at ``window_end`` newly covers) and ``session_start``.
    """
    import pandas as pd

    config = config or SessionConfig()
    columns = list(WINDOW_COLUMNS)
    missing = [c for c in ACTIVITY_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"session view needs per-second flow rows; missing {missing}")
    if rows.empty:
        return pd.DataFrame(columns=columns)
    data = rows.loc[:, list(ACTIVITY_COLUMNS)].copy()
    data["group"] = session_groups(data, config)
    step, width = int(round(config.step)), int(round(config.window))
    out: list[list[object]] = []
    for (client, group), part in data.groupby(["client", "group"], sort=True):
        g = _group(part)
        n = len(g.down)
        for hi in range(step, n + step, step):
            lo = max(0, hi - width)
            top = min(hi, n)
            total = float(g.down[lo:top].sum())
            if total < config.min_bytes:
                continue
            feats = _features(g, lo, hi, config)
            recent = float(g.down[max(lo, hi - step) : top].sum())
            out.append([client, group, g.t0 + lo, g.t0 + hi, g.t0, total, recent, *feats])
    return pd.DataFrame(out, columns=columns)


@dataclass(frozen=True, slots=True)
class FlowSeconds:
    """One flow's bytes down per second of its life (``seconds``: the flow's k-th second
    -> bytes, as the ``window=1`` featurize rows count them), with its client and session
    group (:func:`group_of`)."""

    client: str
    group: str
    first_ts: float
    seconds: Mapping[int, float]


def window_records(
    flows: Iterable[FlowSeconds],
    end: float,
    config: SessionConfig | None = None,
    born: Mapping[tuple[str, str], float] | None = None,
) -> list[dict[str, Any]]:
    """One row (a dict of :data:`WINDOW_COLUMNS`) per (client, group), sorted, for the
    window ``[end - window, end)`` (live mode: the window that ends now); groups that
    moved less than ``min_bytes`` down in it are left out. Plain Python and numpy: live
    mode judges sessions without pandas.

    ``born``: per (client, group), the second its session began (:func:`session_table`'s
    clock: the group's first packet, floored). A group younger than a window is described
    over the seconds it has lived, as :func:`session_table` describes a session's first
    windows; a group younger than ``step`` (the offline view's first window) is left out
    until it is that old. ``session_start`` is that second; without it, the window's
    start."""
    config = config or SessionConfig()
    born = born or {}
    width, step = int(round(config.window)), int(round(config.step))
    whole = float(math.floor(end)) - width
    groups: dict[tuple[str, str], list[FlowSeconds]] = {}
    for flow in flows:
        groups.setdefault((flow.client, flow.group), []).append(flow)
    out: list[dict[str, Any]] = []
    for client, group in sorted(groups):
        began = float(math.floor(born.get((client, group), whole)))
        t0 = max(whole, began)
        span = int(whole + width - t0)
        if span < step:  # younger than the offline view's first window: not yet
            continue
        t_abs: list[float] = []
        nbytes: list[float] = []
        codes: list[int] = []
        first: list[float] = []
        for flow in groups[(client, group)]:
            kept = [
                (flow.first_ts + k, b)
                for k, b in flow.seconds.items()
                if t0 <= flow.first_ts + k < t0 + span
            ]
            if not kept:
                continue
            codes.extend([len(first)] * len(kept))
            first.append(flow.first_ts)
            t_abs.extend(t for t, _ in kept)
            nbytes.extend(b for _, b in kept)
        if not first:
            continue
        g = _binned(
            np.array(t_abs, dtype=np.float64),
            np.array(nbytes, dtype=np.float64),
            np.array(codes, dtype=np.intp),
            np.array(first, dtype=np.float64),
            t0,
            span,
        )
        total = float(g.down.sum())
        if total < config.min_bytes:
            continue
        feats = _features(g, 0, span, config)
        recent = float(g.down[max(0, span - step) :].sum())
        values = [client, group, t0, t0 + span, began, total, recent, *feats]
        out.append(dict(zip(WINDOW_COLUMNS, values, strict=True)))
    return out


def latest_windows(
    rows: pd.DataFrame, end: float, config: SessionConfig | None = None
) -> pd.DataFrame:
    """:func:`window_records` of per-(flow, second) rows (``featurize`` with
    ``window=1``), as a table with the columns of :func:`session_table`; each group's
    session begins at its first row, so the window equals :func:`session_table`'s window
    that ends at ``end`` (also in a session's first minute)."""
    import pandas as pd

    config = config or SessionConfig()
    if rows.empty:
        return pd.DataFrame(columns=list(WINDOW_COLUMNS))
    data = rows.loc[:, list(ACTIVITY_COLUMNS)].copy()
    data["group"] = session_groups(data, config)
    t_abs = data["first_ts"].to_numpy(float) + data["window_start"].to_numpy(float)
    starts = data.assign(t_abs=t_abs).groupby(["client", "group"])["t_abs"].min()
    born = {(str(c), str(g)): float(math.floor(t)) for (c, g), t in starts.items()}
    seconds: dict[object, dict[int, float]] = {}
    heads: dict[object, tuple[str, str, float]] = {}
    for r in data.itertuples(index=False):
        if r.flow_id not in heads:
            heads[r.flow_id] = (str(r.client), str(r.group), float(r.first_ts))
            seconds[r.flow_id] = {}
        per_second = seconds[r.flow_id]
        k = int(r.window_start)
        per_second[k] = per_second.get(k, 0.0) + float(r.bytes_down)
    flows = [FlowSeconds(*heads[fid], seconds[fid]) for fid in heads]
    records = window_records(flows, end, config, born)
    return pd.DataFrame(records, columns=list(WINDOW_COLUMNS))
