"""Live mode's fast lane: a decoded batch into the flow table without a Python step per
packet for the flows that are past their start.

Most packets on a router belong to a few long flows (a video, a download, a call) whose
plugins are done reading single packets: names were read from the first packets, the
check schedule was set at the start, the session view only sums bytes per second. Once
such a flow is :meth:`~classifier.flows.table.FlowTable.steady`, :class:`FastLane` puts its
key into a compiled hash table (:mod:`classifier.flows.lane_fast`). A batch is then
walked in runs: a compiled call finds the fast run (packets of steady flows that open,
close, cap or resegment nothing and come before the next sweep), which goes into the
table per flow at once (:meth:`FlowTable.extend`); the slow run after it becomes
:class:`Packet` records for :meth:`FlowTable.add`, exactly as without the lane. The
flows, their packets, the plugins' state and the table's order come out the same as
adding every packet one by one (tested on real captures).
"""

from __future__ import annotations

import numpy as np

from classifier.capture.decode_fast import C_FLAGS, C_IPLEN, C_PCAP, C_PLEN, C_WIRE
from classifier.capture.live_fast import Columns, PacketBuilder
from classifier.capture.packet import Packet
from classifier.flows import Flow, FlowTable
from classifier.flows.lane_fast import (
    NPK,
    SLOT_ROWS,
    lane_delete,
    lane_insert,
    lane_rehash,
    lane_scan,
)

__all__ = ["FastLane"]

_FIRST_SLOTS = 1024


class FastLane:
    """Feeds batches of columns into ``table`` (see the module docstring); rows that go
    the slow way are built into packets with ``builder``."""

    def __init__(self, table: FlowTable, builder: PacketBuilder) -> None:
        self.table = table
        self._builder = builder
        cfg = table.config
        self._mss = cfg.resegment_mss or 0
        self._max_packets = cfg.max_packets or 0
        self._slots = np.zeros((SLOT_ROWS, _FIRST_SLOTS), np.int64)
        self._hash = np.zeros(4 * _FIRST_SLOTS, np.int64)
        self._flows: list[Flow | None] = [None] * _FIRST_SLOTS
        self._free = list(range(_FIRST_SLOTS - 1, -1, -1))
        self._slot_of: dict[int, int] = {}  # flow id -> slot
        self.fast_packets = 0
        """Packets that took the fast lane so far."""
        self._out_slot = np.zeros(0, np.int64)
        self._out_dir = np.zeros(0, np.int8)
        table.on_end = self._forget

    def take(
        self, arrays: Columns, k: int, view: memoryview, keep: list[Packet] | None = None
    ) -> None:
        """Add packets ``0..k-1`` of ``arrays`` (payloads in ``view``) to the table. With
        ``keep``, every packet goes the slow way and is appended to it (for recording)."""
        if keep is not None:
            self._add(arrays, 0, k, view, keep)
            return
        if k > len(self._out_slot):
            self._out_slot = np.zeros(k, np.int64)
            self._out_dir = np.zeros(k, np.int8)
        i0 = 0
        while i0 < k:
            i, j = lane_scan(
                i0,
                k,
                arrays.ts,
                arrays.cols,
                self._slots,
                self._hash,
                self.table.next_sweep,
                self._mss,
                self._max_packets,
                self._out_slot,
                self._out_dir,
            )
            if i > i0:
                self._extend(arrays, i0, i)
            if j > i:
                self._add(arrays, i, j, view, [])
            i0 = j

    def _extend(self, arrays: Columns, start: int, stop: int) -> None:
        """The fast run ``start..stop-1`` into its flows, the least recently active first."""
        self.fast_packets += stop - start
        slots = self._out_slot[start:stop]
        order = np.argsort(slots, kind="stable")
        cuts = np.flatnonzero(np.diff(slots[order])) + 1
        groups = np.split(order + start, cuts)
        groups.sort(key=lambda rows: int(rows[-1]))
        ts, cols = arrays.ts, arrays.cols
        for rows in groups:
            flow = self._flows[int(self._out_slot[rows[0]])]
            assert flow is not None
            self.table.extend(
                flow,
                ts[rows],
                cols[C_IPLEN, rows],
                self._out_dir[rows],
                cols[C_FLAGS, rows],
                cols[C_PLEN, rows],
                int(cols[C_WIRE, rows].sum()),
                int(np.count_nonzero(cols[C_PCAP, rows])),
            )

    def _add(
        self, arrays: Columns, start: int, stop: int, view: memoryview, packets: list[Packet]
    ) -> None:
        """The slow run ``start..stop-1`` through :meth:`FlowTable.add` (its packets
        appended to ``packets``); flows that turn steady join the lane."""
        first = len(packets)
        self._builder.build(arrays, stop, view, packets, start)
        table = self.table
        for row, pkt in enumerate(packets[first:], start):
            flow = table.add(pkt)
            slot = self._slot_of.get(flow.flow_id)
            if slot is not None:
                self._slots[NPK, slot] = flow.packets
            elif table.steady(flow):
                key = flow.key
                client_is_src = pkt.src == key.client and pkt.sport == key.client_port
                lane_insert(
                    self._slots,
                    self._hash,
                    arrays.cols,
                    row,
                    self._slot_for(flow),
                    client_is_src,
                    flow.packets,
                )

    def _slot_for(self, flow: Flow) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._flows[slot] = flow
        self._slot_of[flow.flow_id] = slot
        return slot

    def _grow(self) -> None:
        """Twice the slots, and a hash table to match."""
        n = self._slots.shape[1]
        slots = np.zeros((SLOT_ROWS, 2 * n), np.int64)
        slots[:, :n] = self._slots
        self._slots = slots
        self._hash = np.zeros(8 * n, np.int64)
        lane_rehash(self._slots, self._hash, np.arange(n, dtype=np.int64))
        self._flows.extend([None] * n)
        self._free.extend(range(2 * n - 1, n - 1, -1))

    def _forget(self, flow: Flow) -> None:
        """A flow left the table: its slot is free again."""
        slot = self._slot_of.pop(flow.flow_id, None)
        if slot is not None:
            lane_delete(self._slots, self._hash, slot)
            self._flows[slot] = None
            self._free.append(slot)
