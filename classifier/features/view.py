"""A flow, or a time slice of it, as numpy columns: what every feature group reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.flows.flow import Flow

__all__ = ["FlowView"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FlowView:
    """Packets of one flow between ``start`` and ``end`` (seconds since the flow's start).

    ``t`` is each packet's time since ``start``; ``size`` the IP length; ``direction`` +1 for
    client->server, -1 for server->client; ``flags`` TCP flags; ``payload`` transport
    payload length; ``span`` the length of the slice (the flow's duration for a whole flow).
    """

    t: F64
    size: I64
    direction: npt.NDArray[np.int8]
    flags: npt.NDArray[np.uint8]
    payload: I64
    span: float

    @classmethod
    def of(cls, flow: Flow, start: float = 0.0, end: float | None = None) -> FlowView:
        """The packets with ``start <= t < end`` (``end=None``: to the flow's last packet)."""
        t = np.frombuffer(flow.ts, dtype=np.float64) - flow.first_ts
        size = np.frombuffer(flow.size, dtype=np.int64)
        direction = np.frombuffer(flow.direction, dtype=np.int8)
        flags = np.frombuffer(flow.flags, dtype=np.uint8)
        payload = np.frombuffer(flow.payload_len, dtype=np.int64)
        last = float(t.max()) if len(t) else 0.0
        if start <= 0.0 and end is None:
            return cls(t, size, direction, flags, payload, last)
        mask = t >= start
        if end is not None:
            mask &= t < end
        stop = last if end is None else min(end, last)
        return cls(
            t[mask] - start,
            size[mask],
            direction[mask],
            flags[mask],
            payload[mask],
            max(stop - start, 0.0),
        )

    def __len__(self) -> int:
        return len(self.t)
