"""The state of one bidirectional flow: its key and its packet sequence."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from classifier.flows.key import FlowKey

__all__ = ["Flow", "UP", "DOWN"]

UP = 1  # client -> server
DOWN = -1  # server -> client


@dataclass(slots=True, eq=False)
class Flow:
    """One flow's packets as columns (time, IP length, direction, TCP flags, payload length).

    ``wire_bytes`` counts whole frames as captured on the wire (link header included), as
    tshark's conversation statistics do. ``ext`` holds what flow plugins attach (names, for
    example). ``end_reason`` is set when the flow leaves the table: idle, active, fin, rst,
    evicted, packets (the per-flow packet cap) or end (of capture).
    """

    flow_id: int
    key: FlowKey
    first_ts: float
    last_ts: float
    ts: array = field(default_factory=lambda: array("d"))
    size: array = field(default_factory=lambda: array("q"))
    direction: array = field(default_factory=lambda: array("b"))
    flags: array = field(default_factory=lambda: array("B"))
    payload_len: array = field(default_factory=lambda: array("q"))
    wire_bytes: int = 0
    fin_up: bool = False
    fin_down: bool = False
    end_reason: str = ""
    ext: dict[str, Any] = field(default_factory=dict)

    @property
    def packets(self) -> int:
        return len(self.ts)

    def append(self, ts: float, size: int, direction: int, flags: int, payload_len: int) -> None:
        self.ts.append(ts)
        self.size.append(size)
        self.direction.append(direction)
        self.flags.append(flags & 0xFF)  # the NS bit (0x100) is not kept
        self.payload_len.append(payload_len)
        self.last_ts = ts
