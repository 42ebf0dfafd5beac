"""Flow labels: from a capture's session label (its manifest row) to one label per flow.

A capture is labelled as a whole ("this was 5 minutes of Reels"), but only some of its flows
carry the short-form video: the rest are the app's API, ads, analytics, thumbnails, other
apps in the background. :func:`flow_labels` turns the session label into per-flow labels
with the rules below; a flow the rules cannot decide gets ``None`` and is left out of
training (and of evaluation). The same rules are written down in ``datasets/README.md``.

Session label -> flow labels:

* ``web``, ``call``, ``other-video``, ``other``: every flow is ``other``.
* ``mixed``: every flow is ``None`` (no per-flow timeline is recorded yet).
* ``short-form`` / ``long-form`` (the *video session*), per flow:

  1. *Media flow*: its name (SNI, else DNS) is on the media CDN of the row's ``app``
     (``MEDIA_SUFFIXES``: youtube -> ``googlevideo.com``; instagram -> ``cdninstagram.com``,
     ``fbcdn.net``; facebook -> ``fbcdn.net``; snapchat -> ``sc-cdn.net``; tiktok ->
     ``tiktokcdn*.com``, ``byteoversea.com``, ``bytefcdn-*.com``, ``muscdn.com``,
     ``ibytedtos.com`` and ``v<N>...tiktok.com`` hosts), or, for douyin and kwai (whole
     service short-form, CDNs not listed), any name of that service; for an app not in
     the table, any name whose category is a video one in ``services.toml``.
     A media flow that carries at least ``MEDIA_MIN_BYTES`` downstream takes the session
     label; one under ``SMALL_MAX_BYTES`` is ``other`` (a probe, a manifest, a thumbnail);
     one in between is ``None``.
  2. *Other named flow* (page, API, ads, analytics, images, other services): ``other``.
  3. *Unnamed flow* in a capture where some flow has a name: ``other`` if it carries under
     ``SMALL_MAX_BYTES`` downstream, else ``None`` (it might be the video: we cannot tell).
  4. *Nameless capture* (imported packet traces, header-only captures without DNS): a
     capture of a single flow takes the session label directly; otherwise a TCP/UDP flow on
     port 443 or 80 with at least ``MEDIA_MIN_BYTES`` downstream takes the session label, one
     under ``SMALL_MAX_BYTES`` is ``other``, the rest ``None``.

For Requet captures (long-form YouTube in Chrome) this gives: flows whose DNS name is
``*.googlevideo.com`` and that carry >= 200 kB are ``long-form``, everything else is ``other``
(checked on all 14 captures: every flow >= 200 kB there is a named googlevideo flow).

In a table with one row per (flow, window), the volume of the whole flow decides, so all
windows of a flow share its label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from classifier.errors import DatasetError
from training.manifest import ManifestRow

__all__ = [
    "FLOW_LABELS",
    "MEDIA_MIN_BYTES",
    "SMALL_MAX_BYTES",
    "MEDIA_SUFFIXES",
    "flow_labels",
    "is_media_name",
]

FLOW_LABELS = ("short-form", "long-form", "other")

MEDIA_MIN_BYTES = 200_000
"""Downstream bytes from which a media-CDN flow counts as carrying video."""
SMALL_MAX_BYTES = 50_000
"""Downstream bytes under which a flow is too small to be a video (label ``other``)."""

MEDIA_SUFFIXES: dict[str, tuple[str, ...]] = {
    "youtube": ("googlevideo.com",),
    "instagram": ("cdninstagram.com", "fbcdn.net"),
    "facebook": ("fbcdn.net",),
    "snapchat": ("sc-cdn.net",),
    "tiktok": (
        "tiktokcdn.com",
        "tiktokcdn-us.com",
        "tiktokcdn-eu.com",
        "byteoversea.com",
        "bytefcdn-oversea.com",
        "bytefcdn-ttpeu.com",
        "muscdn.com",
        "ibytedtos.com",
    ),
}
"""Host-name suffixes of the servers that carry an app's video segments."""

_MEDIA_PATTERNS: dict[str, re.Pattern[str]] = {
    "tiktok": re.compile(r"v\d+[a-z0-9-]*\.tiktok\.com"),  # web player video hosts
}
_WHOLE_SERVICE_APPS = ("douyin", "kwai")
_VIDEO_CATEGORIES = (
    "video-cdn",
    "short-video",
    "short-form-service",
    "long-form-video",
    "live-video",
)
_VIDEO_SESSIONS = ("short-form", "long-form")
_NON_VIDEO_SESSIONS = ("web", "call", "other-video", "other")
_WEB_PORTS = (80, 443)
_TCP, _UDP = 6, 17
_REQUIRED = ("name", "bytes_down")


def _suffix_match(name: str, suffixes: Sequence[str]) -> bool:
    host = name.strip().rstrip(".").lower()
    return any(host == s or host.endswith("." + s) for s in suffixes)


def _service_of(name: str) -> tuple[str, str]:
    from classifier.names.services import category_for, service_for

    service = service_for(name)
    return service, category_for(service)


def is_media_name(
    name: str | None, app: str, service: str | None = None, category: str | None = None
) -> bool:
    """True if ``name`` is a server that carries ``app``'s video (rule 1 of the module doc).

    ``service``/``category`` are the flow's service columns; computed from ``name`` when
    not given.
    """
    if not name:
        return False
    app = app.strip().lower()
    if app in MEDIA_SUFFIXES:
        pattern = _MEDIA_PATTERNS.get(app)
        host = name.strip().rstrip(".").lower()
        return _suffix_match(host, MEDIA_SUFFIXES[app]) or bool(
            pattern is not None and pattern.fullmatch(host)
        )
    if service is None or category is None:
        service, category = _service_of(name)
    if app in _WHOLE_SERVICE_APPS:
        return service == app
    return category in _VIDEO_CATEGORIES


def _present(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _by_volume(bytes_down: float, session: str) -> str | None:
    if bytes_down >= MEDIA_MIN_BYTES:
        return session
    if bytes_down < SMALL_MAX_BYTES:
        return "other"
    return None


def _flow_bytes(flows: pd.DataFrame) -> pd.Series:
    """Downstream bytes of each row's whole flow (summed over windows in a window table)."""
    down = pd.to_numeric(flows["bytes_down"], errors="coerce").fillna(0.0)
    if "window_start" in flows.columns and "flow_id" in flows.columns:
        keys = [flows["flow_id"]]
        if "capture" in flows.columns:
            keys.insert(0, flows["capture"])
        return down.groupby(keys, dropna=False).transform("sum")
    return down


def _flow_count(flows: pd.DataFrame) -> int:
    if "window_start" in flows.columns and "flow_id" in flows.columns:
        return int(flows["flow_id"].nunique())
    return len(flows)


def flow_labels(flows: pd.DataFrame, row: ManifestRow) -> pd.Series:
    """One label from ``FLOW_LABELS`` (or ``None``: leave out) per row of ``flows``.

    ``flows`` is a featurize table of the capture ``row`` describes; it needs the columns
    ``name`` and ``bytes_down`` (``service``, ``category``, ``server_port`` and ``proto`` are
    used when present). The result has the same index. Raises :class:`DatasetError` if a
    required column is missing or the session label is unknown.
    """
    missing = [c for c in _REQUIRED if c not in flows.columns]
    if missing:
        raise DatasetError(
            f"{row.path.name}: flow table lacks column(s) {', '.join(missing)} needed for labels"
        )
    session = row.label
    if session in _NON_VIDEO_SESSIONS:
        return pd.Series(["other"] * len(flows), index=flows.index, dtype=object)
    if session == "mixed":
        return pd.Series([None] * len(flows), index=flows.index, dtype=object)
    if session not in _VIDEO_SESSIONS:
        raise DatasetError(f"{row.path.name}: unknown session label {session!r}")
    names = flows["name"]
    nameless = not any(_present(n) for n in names)
    down = _flow_bytes(flows)
    if nameless and _flow_count(flows) == 1:
        return pd.Series([session] * len(flows), index=flows.index, dtype=object)
    labels: list[str | None] = []
    for pos in range(len(flows)):
        name = names.iloc[pos]
        volume = float(down.iloc[pos])
        if nameless:
            labels.append(_nameless_label(flows, pos, volume, session))
        elif not _present(name):
            labels.append("other" if volume < SMALL_MAX_BYTES else None)
        elif is_media_name(
            name, row.app, _opt(flows, "service", pos), _opt(flows, "category", pos)
        ):
            labels.append(_by_volume(volume, session))
        else:
            labels.append("other")
    return pd.Series(labels, index=flows.index, dtype=object)


def _opt(flows: pd.DataFrame, column: str, pos: int) -> str | None:
    if column not in flows.columns:
        return None
    value = flows[column].iloc[pos]
    return value if isinstance(value, str) else None


def _nameless_label(flows: pd.DataFrame, pos: int, volume: float, session: str) -> str | None:
    label = _by_volume(volume, session)
    if label != session:
        return label
    port = flows["server_port"].iloc[pos] if "server_port" in flows.columns else None
    proto = flows["proto"].iloc[pos] if "proto" in flows.columns else None
    if port is not None and int(port) not in _WEB_PORTS:
        return None
    if proto is not None and int(proto) not in (_TCP, _UDP):
        return None
    return session
