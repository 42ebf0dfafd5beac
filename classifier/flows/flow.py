"""The state of one bidirectional flow: its key and its packet sequence."""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from classifier.flows.key import FlowKey

__all__ = ["Flow", "UP", "DOWN"]

UP = 1  # client -> server
DOWN = -1  # server -> client

_F64 = struct.Struct("=d")
_I64 = struct.Struct("=q")
#: Bytes per packet entry: time, IP length and payload length (8 each), direction, flags.
_ENTRY = 26
#: The columns in a flow's buffer: (array type code, bytes per entry, offset in bytes per
#: entry of capacity).
_Column = tuple[str, int, int]
_TS: _Column = ("d", 8, 0)
_SIZE: _Column = ("q", 8, 8)
_PAYLOAD: _Column = ("q", 8, 16)
_DIRECTION: _Column = ("b", 1, 24)
_FLAGS: _Column = ("B", 1, 25)
_COLUMNS = (_TS, _SIZE, _PAYLOAD, _DIRECTION, _FLAGS)


@dataclass(slots=True, eq=False)
class Flow:
    """One flow's packets as columns (time, IP length, direction, TCP flags, payload length).

    ``wire_bytes`` counts whole frames as captured on the wire (link header included), as
    tshark's conversation statistics do. ``payload_packets`` counts the packets whose
    captured payload was not empty. ``rst`` is set once a TCP RST was seen. ``ext`` holds
    what flow plugins attach (names, for example): None until the first :meth:`attach`
    (live mode holds tens of thousands of flows, most with nothing attached). ``end_reason``
    is set when the flow leaves the table: idle, active, fin, rst, evicted, packets (the
    per-flow packet cap) or end (of capture).

    The five columns live in one buffer, each a block of its capacity (live mode holds
    tens of thousands of flows of a few packets: five ``array`` objects cost ~530 bytes
    for one packet, the buffer ~90). :attr:`ts`, :attr:`size`, :attr:`direction`,
    :attr:`flags` and :attr:`payload_len` give a copy of a column as an ``array`` (``d``,
    ``q``, ``b``, ``B``, ``q``).
    """

    flow_id: int
    key: FlowKey
    first_ts: float
    wire_bytes: int = 0
    fin_up: bool = False
    fin_down: bool = False
    rst: bool = False
    end_reason: str = ""
    ext: dict[str, Any] | None = None
    packets: int = field(default=0, init=False)
    payload_packets: int = field(default=0, init=False)
    _buf: bytearray = field(default_factory=bytearray, init=False, repr=False)

    @property
    def last_ts(self) -> float:
        """The time of the last packet (``first_ts`` before the first): read from the
        buffer, not kept as a float of its own."""
        n = self.packets
        return float(_F64.unpack_from(self._buf, 8 * (n - 1))[0]) if n else self.first_ts

    @property
    def ts(self) -> array[float]:
        return self._column(_TS)

    @property
    def size(self) -> array[int]:
        return self._column(_SIZE)

    @property
    def direction(self) -> array[int]:
        return self._column(_DIRECTION)

    @property
    def flags(self) -> array[int]:
        return self._column(_FLAGS)

    @property
    def payload_len(self) -> array[int]:
        return self._column(_PAYLOAD)

    def attach(self, name: str, value: Any) -> None:
        """Attach a plugin's ``value`` to the flow under ``name``."""
        if self.ext is None:
            self.ext = {}
        self.ext[name] = value

    def attached(self, name: str) -> Any:
        """What a plugin attached under ``name``, or None."""
        return None if self.ext is None else self.ext.get(name)

    def append(self, ts: float, size: int, direction: int, flags: int, payload_len: int) -> None:
        n = self.packets
        buf = self._buf
        cap = len(buf) // _ENTRY
        if n == cap:
            buf, cap = self._grow(n)
        _F64.pack_into(buf, 8 * n, ts)
        _I64.pack_into(buf, _SIZE[2] * cap + 8 * n, size)
        _I64.pack_into(buf, _PAYLOAD[2] * cap + 8 * n, payload_len)
        buf[_DIRECTION[2] * cap + n] = direction & 0xFF
        buf[_FLAGS[2] * cap + n] = flags & 0xFF  # the NS bit (0x100) is not kept
        self.packets = n + 1

    def extend(
        self,
        ts: npt.NDArray[np.float64],
        size: npt.NDArray[np.int64],
        direction: npt.NDArray[np.int8],
        flags: npt.NDArray[np.int64],
        payload_len: npt.NDArray[np.int64],
    ) -> None:
        """:meth:`append` for many packets at once (arrays of one length, in time order):
        the same columns as appending them one by one."""
        m = len(ts)
        n = self.packets
        buf = self._buf
        cap = len(buf) // _ENTRY
        if n + m > cap:
            buf, cap = self._grow(n, n + m)
        with memoryview(buf) as view:
            view[8 * n : 8 * (n + m)] = np.ascontiguousarray(ts, "=f8").tobytes()
            at = _SIZE[2] * cap + 8 * n
            view[at : at + 8 * m] = np.ascontiguousarray(size, "=i8").tobytes()
            at = _PAYLOAD[2] * cap + 8 * n
            view[at : at + 8 * m] = np.ascontiguousarray(payload_len, "=i8").tobytes()
            at = _DIRECTION[2] * cap + n
            view[at : at + m] = direction.astype(np.uint8).tobytes()
            at = _FLAGS[2] * cap + n
            view[at : at + m] = (flags & 0xFF).astype(np.uint8).tobytes()
        self.packets = n + m

    def _column(self, column: _Column) -> array[Any]:
        code, width, offset = column
        out = array(code)
        start = offset * (len(self._buf) // _ENTRY)
        with memoryview(self._buf) as view:
            out.frombytes(view[start : start + self.packets * width])
        return out

    def _grow(self, n: int, need: int = 0) -> tuple[bytearray, int]:
        """A buffer with room for more than the ``n`` entries held (one at a time while
        small, an eighth more once larger; at least ``need``), the columns copied over."""
        cap = max(n + 1 + (n >> 3), need)
        old, buf = self._buf, bytearray(_ENTRY * cap)
        was = len(old) // _ENTRY
        with memoryview(old) as view:
            for _, width, offset in _COLUMNS:
                size = n * width
                buf[offset * cap : offset * cap + size] = view[offset * was : offset * was + size]
        self._buf = buf
        return buf, cap
