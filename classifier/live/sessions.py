"""Live mode's session view: bytes down per flow per second, judged every ``step`` seconds.

:class:`SessionTracker` is a flow-table plugin: it adds each downstream packet's IP length
to its flow's current second, counted from the flow's first packet (what ``featurize``
with ``window=1`` reports offline as ``bytes_down``) and keeps only the seconds of the
last window. :meth:`SessionTracker.due` says when the next judgement is due;
:meth:`SessionTracker.windows` returns the latest complete window of every (client,
group) as rows through :func:`classifier.features.session.window_records` (no pandas),
the function behind the offline ``latest_windows`` that is tested against the offline
view: a group younger than a window is described over the seconds it has lived, as the
offline view describes a session's first windows. A nameless flow joins the group of
the service that named flows reached its server address on, as offline; live mode knows
only the names seen so far (offline, a name seen later in the capture counts too) and
forgets a server's name an hour after its last named flow. Memory: one small dict per
flow that brought something down in the last window (a flow that never did, a scan or a
one-sided flood, costs nothing here), one float per (client, group) with such flows and
one entry per server address named flows reached in the last hour (at most
:data:`NAMED_SERVERS_MAX`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from classifier.capture.packet import Packet
from classifier.features.session import (
    FlowSeconds,
    SessionConfig,
    group_of,
    is_named,
    server_services,
    window_records,
)
from classifier.flows import Flow
from classifier.flows.flow import DOWN

__all__ = ["NAME_MEMORY_S", "NAMED_SERVERS_MAX", "SessionTracker"]

NAME_MEMORY_S = 3600.0
"""Seconds a server address keeps the service its last named flow gave it."""
NAMED_SERVERS_MAX = 100_000
"""At most this many server addresses keep a service; past it, the longest unseen go."""


@dataclass(slots=True)
class _Activity:
    flow: Flow
    seconds: dict[int, float]  # bytes down per second of the flow


class SessionTracker:
    """Per-second downstream bytes of recent flows; ``meta(flow)`` gives a flow's
    ``service`` and ``category`` (the featurizer's names, read at judgement time)."""

    def __init__(
        self,
        config: SessionConfig,
        meta: Callable[[Flow], dict[str, Any]],
        named_servers_max: int = NAMED_SERVERS_MAX,
    ) -> None:
        self.config = config
        self.named_servers_max = named_servers_max
        self._meta = meta
        self._flows: dict[int, _Activity] = {}
        self._next: float | None = None
        self._born: dict[tuple[str, str], float] = {}
        """Per (client, group) with tracked flows: the first packet of its earliest one.
        A group whose flows were all forgotten (quiet for a whole window) begins anew."""
        self._lent: dict[str, str] = {}
        """Per server address named flows reached: :func:`server_services`."""
        self._lent_seen: OrderedDict[str, float] = OrderedDict()
        """Per server address in :attr:`_lent`: when a named flow last reached it, the
        longest unseen first."""
        self.media: dict[tuple[str, str], list[Flow]] = {}
        """After :meth:`windows`: the flows of each (client, group) that moved at least
        ``media_bytes`` in the window, largest first."""

    def on_init(self, flow: Flow, pkt: Packet) -> None:
        """Nothing yet: a flow is tracked from its first downstream packet."""

    def on_update(self, flow: Flow, pkt: Packet, direction: int) -> None:
        if direction != DOWN:
            return
        act = self._flows.get(flow.flow_id)
        if act is None:
            act = self._flows[flow.flow_id] = _Activity(flow, {})
        k = math.floor(pkt.ts - flow.first_ts)  # the flow's k-th second, as offline
        seconds = act.seconds
        seconds[k] = seconds.get(k, 0.0) + pkt.ip_len

    def steady(self, flow: Flow) -> bool:
        return True

    def on_extend(
        self,
        flow: Flow,
        ts: npt.NDArray[np.float64],
        size: npt.NDArray[np.int64],
        direction: npt.NDArray[np.int8],
    ) -> None:
        """:meth:`on_update` for many packets: their bytes down summed per second (exact:
        IP lengths are integers)."""
        down = direction == DOWN
        if not down.any():
            return
        act = self._flows.get(flow.flow_id)
        if act is None:
            act = self._flows[flow.flow_id] = _Activity(flow, {})
        k = np.floor(ts[down] - flow.first_ts).astype(np.int64)
        keys, at = np.unique(k, return_inverse=True)
        sums = np.bincount(at, weights=size[down])
        seconds = act.seconds
        for key, total in zip(keys.tolist(), sums.tolist(), strict=True):
            seconds[key] = seconds.get(key, 0.0) + total

    def due(self, now: float) -> bool:
        """Whether a judgement is due at ``now`` (every ``step`` seconds)."""
        if self._next is None:
            self._next = math.floor(now) + self.config.step
        if now < self._next:
            return False
        self._next = math.floor(now) + self.config.step
        return True

    def windows(self, now: float) -> list[dict[str, Any]]:
        """For every (client, group) that moved enough, the window that ends one second
        before ``now`` (a flow's second that began before the end is complete by ``now``,
        so the figures equal the offline view's), as a dict of ``WINDOW_COLUMNS``; flows
        quiet for a whole window are forgotten. Fills :attr:`media`."""
        end = math.floor(now) - 1.0
        start = end - self.config.window
        flows: list[FlowSeconds] = []
        media: dict[tuple[str, str], list[tuple[float, Flow]]] = {}
        born: dict[tuple[str, str], float] = {}
        kept: list[tuple[_Activity, dict[str, Any]]] = []
        for fid in list(self._flows):
            act = self._flows[fid]
            seconds = act.seconds
            for k in [k for k in seconds if math.floor(act.flow.first_ts + k) < start]:
                del seconds[k]
            if not seconds and (act.flow.end_reason or act.flow.last_ts < start):
                del self._flows[fid]
                continue
            kept.append((act, self._meta(act.flow)))
        self._learn([(m["server"], m["service"]) for _, m in kept], now)
        for act, meta in kept:
            first, seconds = act.flow.first_ts, act.seconds
            group = group_of(meta["service"], meta["server"], self.config, self._lent)
            key = (meta["client"], group)
            born[key] = min(born.get(key, first), first, self._born.get(key, first))
            if not seconds:
                continue
            total = sum(seconds.values())
            if total >= self.config.media_bytes:
                media.setdefault(key, []).append((total, act.flow))
            flows.append(FlowSeconds(key[0], key[1], first, seconds))
        self._born = born
        self.media = {k: [f for _, f in sorted(v, key=lambda t: -t[0])] for k, v in media.items()}
        return window_records(flows, end, self.config, born)

    def _learn(self, pairs: list[tuple[str, Any]], now: float) -> None:
        """Add the (server, service) of the named flows seen now to :attr:`_lent`; forget
        servers no named flow reached for :data:`NAME_MEMORY_S`, and the longest unseen
        past :attr:`named_servers_max`."""
        named = [(server, service) for server, service in pairs if is_named(service)]
        if named:
            server_services(named, self._lent)
            for server, _ in named:
                self._lent_seen[server] = now
                self._lent_seen.move_to_end(server)
        seen = self._lent_seen
        while seen and (
            next(iter(seen.values())) < now - NAME_MEMORY_S or len(seen) > self.named_servers_max
        ):
            server, _ = seen.popitem(last=False)
            del self._lent[server]

    def __len__(self) -> int:
        return len(self._flows)
