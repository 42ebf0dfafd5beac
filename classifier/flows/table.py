"""The flow table: assigns packets to bidirectional flows and expires them.

Expiry is driven by capture time (the packets' own timestamps, or the wall clock in live
mode through :meth:`FlowTable.sweep`) and checked for all flows at least every
``FlowConfig.sweep_interval`` seconds, not only when a flow sees a new packet.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from classifier.capture.packet import TCP, Packet
from classifier.flows.flow import DOWN, UP, Flow
from classifier.flows.key import FlowKey, orient

__all__ = ["FlowConfig", "FlowPlugin", "FlowTable", "TableStats"]

_Key = tuple[int, str, int, str, int]
"""A held flow's key (its :class:`FlowKey`), or a packet's 5-tuple looked up."""

I8 = npt.NDArray[np.int8]

_FIN = 0x01
_SYN = 0x02
_RST = 0x04
_ACK = 0x10


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """How the flow table cuts packets into flows.

    ``idle_timeout``: a flow with no packet for this long ends. ``active_timeout``: a flow
    older than this ends and the next packet starts a new one. ``close_linger``: after RST or
    both FINs, the flow ends once it has been quiet this long (trailing ACKs and
    retransmissions within it still join the flow). ``max_flows``: hard cap
    on flows held at once; the least recently active flow is evicted (and still reported).
    ``resegment_mss``: split packets whose payload exceeds it (captures taken with GRO/TSO)
    into MSS-sized packets with the same timestamp. ``max_packets``: a flow holding this
    many packets (entries, after resegmentation) ends with reason ``"packets"`` at its next
    packet, which starts a new flow with the same client and server; this bounds the memory
    of one very long flow (``None``: no bound).
    """

    idle_timeout: float = 120.0
    active_timeout: float = 1800.0
    close_linger: float = 1.0
    max_flows: int = 500_000
    sweep_interval: float = 1.0
    resegment_mss: int | None = None
    max_packets: int | None = 1_000_000

    def __post_init__(self) -> None:
        if min(self.idle_timeout, self.active_timeout, self.sweep_interval) <= 0:
            raise ValueError("flow timeouts and sweep interval must be positive")
        if self.close_linger < 0:
            raise ValueError("close_linger must not be negative")
        if self.max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        if self.resegment_mss is not None and self.resegment_mss < 64:
            raise ValueError("resegment_mss must be at least 64 bytes")
        if self.max_packets is not None and self.max_packets < 1:
            raise ValueError("max_packets must be at least 1")


class FlowPlugin(Protocol):
    """Per-flow hooks, in the manner of nfstream plugins: state goes into ``flow.ext``
    (:meth:`Flow.attach`)."""

    def on_init(self, flow: Flow, pkt: Packet) -> None: ...

    def on_update(self, flow: Flow, pkt: Packet, direction: int) -> None: ...

    def steady(self, flow: Flow) -> bool:
        """Whether the plugin needs no more of ``flow``'s packets one by one: its later
        packets (no SYN, FIN or RST) may come through :meth:`FlowTable.extend`."""
        ...

    def on_extend(
        self, flow: Flow, ts: npt.NDArray[np.float64], size: npt.NDArray[np.int64], direction: I8
    ) -> None:
        """Packets of a steady flow, many at once (see :meth:`FlowTable.extend`)."""
        ...


@dataclass(slots=True)
class TableStats:
    """Counters of what the table did; ``ended`` counts flows by end reason."""

    packets: int = 0
    flows: int = 0
    peak_flows: int = 0
    ended: dict[str, int] = field(default_factory=dict)

    @property
    def evicted(self) -> int:
        return self.ended.get("evicted", 0)

    @property
    def packet_capped(self) -> int:
        """Flows ended because they reached ``FlowConfig.max_packets``."""
        return self.ended.get("packets", 0)


class FlowTable:
    """Bidirectional 5-tuple flows with idle/active timeouts, TCP close and a size cap.

    Feed packets in capture order with :meth:`add`; collect ended flows with
    :meth:`pop_ended`; call :meth:`flush` at the end of input.
    """

    def __init__(
        self, config: FlowConfig | None = None, plugins: Sequence[FlowPlugin] = ()
    ) -> None:
        self.config = config or FlowConfig()
        self.stats = TableStats()
        self._plugins = tuple(plugins)
        # both under the flow's own key (no second key tuple per flow); a packet finds its
        # flow under its 5-tuple or the reverse one. The start order is insertion order
        self._by_activity: OrderedDict[_Key, Flow] = OrderedDict()
        self._by_start: dict[_Key, Flow] = {}
        self._closing: set[_Key] = set()
        self._ended: deque[Flow] = deque()
        self._next_sweep: float | None = None
        self.on_end: Callable[[Flow], None] | None = None
        """Called with every flow as it leaves the table (before :meth:`pop_ended`)."""

    def __len__(self) -> int:
        return len(self._by_activity)

    def active_flows(self) -> Iterator[Flow]:
        """The flows held now, least recently active first."""
        return iter(list(self._by_activity.values()))

    def add(self, pkt: Packet) -> Flow:
        """Put ``pkt`` into its flow (creating it if needed) and return that flow."""
        self.stats.packets += 1
        if self._next_sweep is None:
            self._next_sweep = pkt.ts + self.config.sweep_interval
        elif pkt.ts >= self._next_sweep:
            self.sweep(pkt.ts)
        flow = self._held(pkt)
        if (
            flow is not None
            and flow.key in self._closing
            and pkt.proto == TCP
            and pkt.tcp_flags & (_SYN | _ACK) == _SYN
        ):
            self._end(flow.key, _close_reason(flow))
            flow = None
        if flow is None:
            flow = self._start(orient(pkt), pkt)
        elif self.config.max_packets is not None and flow.packets >= self.config.max_packets:
            self._end(flow.key, "packets")
            flow = self._start(flow.key, pkt)
        else:
            self._by_activity.move_to_end(flow.key)
        key = flow.key
        direction = UP if pkt.src == key.client and pkt.sport == key.client_port else DOWN
        self._append(flow, pkt, direction)
        for plugin in self._plugins:
            plugin.on_update(flow, pkt, direction)
        if pkt.proto == TCP:
            self._track_close(flow, pkt, direction)
        return flow

    @property
    def next_sweep(self) -> float:
        """The time at or after which the next packet sweeps the table first (-inf
        before the first packet)."""
        return float("-inf") if self._next_sweep is None else self._next_sweep

    def steady(self, flow: Flow) -> bool:
        """Whether ``flow``'s later packets may come through :meth:`extend`: every plugin
        says it needs them no more one by one."""
        return all(plugin.steady(flow) for plugin in self._plugins)

    def extend(
        self,
        flow: Flow,
        ts: npt.NDArray[np.float64],
        size: npt.NDArray[np.int64],
        direction: I8,
        flags: npt.NDArray[np.int64],
        payload_len: npt.NDArray[np.int64],
        wire_bytes: int,
        payload_packets: int,
    ) -> None:
        """Add packets of the held, :meth:`steady` ``flow`` at once (arrays of one length,
        in time order, ``direction`` UP/DOWN): what :meth:`add` does with each, for packets
        that cannot start, end, close, cap or resegment a flow nor trigger a sweep (the
        caller checks: no SYN, FIN or RST, below ``max_packets``, payload within
        ``resegment_mss``, before :attr:`next_sweep`). ``wire_bytes``: their frames'
        length; ``payload_packets``: how many had captured payload. Calls of several flows
        come in the order of their last packet (least recently active first)."""
        self.stats.packets += len(ts)
        self._by_activity.move_to_end(flow.key)
        flow.wire_bytes += wire_bytes
        flow.payload_packets += payload_packets
        flow.extend(ts, size, direction, flags, payload_len)
        for plugin in self._plugins:
            plugin.on_extend(flow, ts, size, direction)

    def _held(self, pkt: Packet) -> Flow | None:
        """The flow ``pkt`` belongs to, if held: its key is the packet's 5-tuple or the
        reverse one."""
        flows = self._by_activity
        flow = flows.get((pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport))
        if flow is None:
            flow = flows.get((pkt.proto, pkt.dst, pkt.dport, pkt.src, pkt.sport))
        return flow

    def sweep(self, now: float) -> None:
        """End every flow whose idle, active or close time has run out at time ``now``."""
        cfg = self.config
        self._next_sweep = now + cfg.sweep_interval
        while self._by_activity:
            key, flow = next(iter(self._by_activity.items()))
            if now - flow.last_ts <= cfg.idle_timeout:
                break
            self._end(key, "idle")
        # one pass: a dict walked from its start again after each end would step over
        # the holes the ends left, again and again
        old = []
        for key, flow in self._by_start.items():
            if now - flow.first_ts <= cfg.active_timeout:
                break
            old.append(key)
        for key in old:
            self._end(key, "active")
        for key in list(self._closing):
            flow = self._by_activity[key]
            if now - flow.last_ts > cfg.close_linger:
                self._end(key, _close_reason(flow))

    def flush(self) -> None:
        """End every flow still held (end of capture)."""
        for key in list(self._by_activity):
            closing = key in self._closing
            self._end(key, _close_reason(self._by_activity[key]) if closing else "end")

    def pop_ended(self) -> list[Flow]:
        """The flows that ended since the last call, in the order they ended."""
        ended = list(self._ended)
        self._ended.clear()
        return ended

    def _start(self, key: FlowKey, pkt: Packet) -> Flow:
        if len(self._by_activity) >= self.config.max_flows:
            self._end(next(iter(self._by_activity)), "evicted")
        self.stats.flows += 1
        flow = Flow(self.stats.flows, key, pkt.ts)
        self._by_activity[key] = flow
        self._by_start[key] = flow
        self.stats.peak_flows = max(self.stats.peak_flows, len(self._by_activity))
        for plugin in self._plugins:
            plugin.on_init(flow, pkt)
        return flow

    def _append(self, flow: Flow, pkt: Packet, direction: int) -> None:
        flow.wire_bytes += pkt.wire_len
        if pkt.payload:
            flow.payload_packets += 1
        mss = self.config.resegment_mss
        if mss is None or pkt.payload_len <= mss:
            flow.append(pkt.ts, pkt.ip_len, direction, pkt.tcp_flags, pkt.payload_len)
            return
        header = max(pkt.ip_len - pkt.payload_len, 0)
        remaining = pkt.payload_len
        flags = pkt.tcp_flags
        while remaining > 0:
            chunk = min(mss, remaining)
            flow.append(pkt.ts, header + chunk, direction, flags, chunk)
            flags &= ~(_SYN | _FIN | _RST)
            remaining -= chunk

    def _track_close(self, flow: Flow, pkt: Packet, direction: int) -> None:
        flags = pkt.tcp_flags
        if flags & _RST:
            flow.rst = True
        elif flags & _FIN:
            if direction == UP:
                flow.fin_up = True
            else:
                flow.fin_down = True
            if not (flow.fin_up and flow.fin_down):
                return
        else:
            return
        self._closing.add(flow.key)

    def _end(self, key: _Key, reason: str) -> None:
        flow = self._by_activity.pop(key)
        del self._by_start[key]
        self._closing.discard(key)
        flow.end_reason = reason
        self.stats.ended[reason] = self.stats.ended.get(reason, 0) + 1
        self._ended.append(flow)
        if self.on_end is not None:
            self.on_end(flow)


def _close_reason(flow: Flow) -> str:
    """Why a closing flow closed: "rst" or "fin"."""
    return "rst" if flow.rst else "fin"
