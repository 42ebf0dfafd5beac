# mypy: disable-error-code="return-value,assignment,arg-type"
# (the compiled helpers compute with numpy int64 scalars, which mypy does not equate with int)
"""Batch decode for the live sources: socket bytes -> packet columns in one compiled call.

The compiled twin of :mod:`classifier.capture.live` (``NflogParser`` and the per-frame
``decode_frame`` of the AF_PACKET source). A live source reads many kernel messages per
wakeup into one reused buffer and records where each read landed (a *segment*).
:func:`walk_nflog` walks the netlink messages of all segments, reads the NFLOG attributes
(payload, timestamp, sequence number) and decodes the IP/TCP/UDP headers with the same
compiled decoder as the offline fast path
(:func:`classifier.capture.decode_fast.decode_frame`), writing one column entry per TCP/UDP
packet.
:class:`PacketBuilder` turns those columns into :class:`Packet` records for the flow table,
with address strings cached.

Decoding matches :class:`classifier.capture.live.NflogParser` (the per-message reference)
packet for packet on well-formed messages. A malformed message (a netlink length or an
attribute that runs past its segment or message) is counted under ``"bad-netlink"`` and
skipped: the rest of its segment is dropped when the netlink header is the broken part.
Nothing here raises for bad input.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from classifier.capture.decode import LINKTYPE_RAW
from classifier.capture.decode_fast import (
    COLUMNS,
    NOTES,
    SKIP_REASONS,
    decode_frame,
    u16,
    u32be,
    u32le,
)
from classifier.capture.nflog import ATTR_PAYLOAD, ATTR_SEQ, ATTR_TIMESTAMP, MSG_PACKET
from classifier.capture.packet import Packet
from classifier.compiled import jit

__all__ = [
    "BatchSink",
    "Columns",
    "LIVE_SKIP_REASONS",
    "MIN_PACKET_MESSAGE",
    "TP3_HEADER",
    "BatchArrays",
    "PacketBuilder",
    "release_blocks",
    "walk_nflog",
    "walk_tpacket",
]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

#: Skip reasons of the live walkers by code: the offline ones, then "bad-netlink".
LIVE_SKIP_REASONS: tuple[str, ...] = (*SKIP_REASONS, "bad-netlink")
_BAD_NETLINK = len(SKIP_REASONS)
_TRUNCATED = SKIP_REASONS.index("truncated-header")
#: Bytes of the smallest NFLOG message that can decode to a packet (netlink header,
#: nfgenmsg, one attribute header, IPv4 and UDP headers): bounds the packets per buffer.
MIN_PACKET_MESSAGE = 16 + 4 + 4 + 20 + 8


@jit(cache=True, inline="always")
def _u16n(b: U8, p: int, big: bool) -> int:
    """A 16-bit netlink field (host byte order)."""
    return u16(b, p) if big else (np.int64(b[p + 1]) << 8) | np.int64(b[p])


@jit(cache=True, inline="always")
def _u32n(b: U8, p: int, big: bool) -> int:
    return u32be(b, p) if big else u32le(b, p)


@jit(cache=True, inline="always")
def _f64_u64be(b: U8, p: int) -> float:
    x = np.uint64(0)
    for i in range(8):
        x = (x << np.uint64(8)) | np.uint64(b[p + i])
    return np.float64(x)


@jit(cache=True, inline="always")
def _wire_len(b: U8, s: int, n: int) -> int:
    """The IP packet's length on the wire, from its header (NFLOG may cut the copy)."""
    if n >= 4 and b[s] >> 4 == 4:
        total = u16(b, s + 2)
        return total if total else n
    if n >= 6 and b[s] >> 4 == 6:
        return u16(b, s + 4) + 40
    return n


@jit(cache=True)
def _nflog_packet(
    b: U8,
    body: int,
    end: int,
    big: bool,
    now: float,
    ts: npt.NDArray[np.float64],
    cols: I64,
    k: int,
    counts: I64,
    state: I64,
    notes: I64,
) -> int:
    """Decode the NFLOG packet message body ``b[body:end]`` into row ``k``; return the
    next free row."""
    pos = body + 4  # after nfgenmsg
    pay_at = -1
    pay_len = 0
    t = 0.0
    seq = -1
    while pos + 4 <= end:
        alen = _u16n(b, pos, big)
        if alen < 4 or pos + alen > end:
            counts[1 + _BAD_NETLINK] += 1
            return k
        kind = _u16n(b, pos + 2, big) & 0x7FFF
        if kind == ATTR_PAYLOAD:
            pay_at = pos + 4
            pay_len = alen - 4
        elif kind == ATTR_TIMESTAMP and alen >= 20:
            t = _f64_u64be(b, pos + 4) + _f64_u64be(b, pos + 12) / 1e6
        elif kind == ATTR_SEQ and alen >= 8:
            seq = u32be(b, pos + 4)
        pos += (alen + 3) & ~3
    if seq >= 0:
        if state[0] >= 0 and seq != state[0]:
            state[1] += (seq - state[0]) & 0xFFFFFFFF
        state[0] = (seq + 1) & 0xFFFFFFFF
    if pay_at < 0:
        counts[1 + _TRUNCATED] += 1
        return k
    reason = decode_frame(
        b, pay_at, pay_len, LINKTYPE_RAW, _wire_len(b, pay_at, pay_len), cols, k, notes
    )
    if reason:
        counts[1 + reason] += 1
        return k
    ts[k] = t if t != 0.0 else now
    return k + 1


@jit(
    "int64(uint8[::1], int64[:, ::1], int64, boolean, float64, float64[::1], int64[:,"
    " ::1], int64[::1], int64[::1], int64[::1])",
    cache=True,
    nogil=True,
)
def walk_nflog(
    b: U8,
    segs: I64,
    nseg: int,
    big: bool,
    now: float,
    ts: npt.NDArray[np.float64],
    cols: I64,
    counts: I64,
    state: I64,
    notes: I64,
) -> int:
    """Walk the netlink messages in the segments ``b[segs[i, 0]:segs[i, 1]]`` and decode
    the NFLOG packet messages; return how many TCP/UDP packets were written.

    ``counts[0]`` counts packet messages, ``counts[1 + code]`` skipped ones by reason code
    (:data:`LIVE_SKIP_REASONS`). ``state[0]`` is the NFULA_SEQ expected next (-1: none
    yet), ``state[1]`` the messages lost by the sequence gaps. Packets without a kernel
    timestamp get ``now``. Stops early (never writes out of bounds) when ``ts`` is full.
    """
    cap = ts.shape[0]
    k = 0
    for i in range(nseg):
        off = max(segs[i, 0], 0)
        end = min(segs[i, 1], b.shape[0])
        while off + 16 <= end:
            if k >= cap:
                return k
            length = _u32n(b, off, big)
            if length < 16 or off + length > end:
                counts[1 + _BAD_NETLINK] += 1
                break
            if _u16n(b, off + 4, big) == MSG_PACKET:
                counts[0] += 1
                k = _nflog_packet(
                    b, off + 16, off + length, big, now, ts, cols, k, counts, state, notes
                )
            off += (length + 3) & ~3
    return k


class Columns(Protocol):
    """Decoded packets as columns: ``ts`` and the ``cols`` rows of :data:`COLUMNS`."""

    ts: npt.NDArray[np.float64]
    cols: I64


#: What a fast live source hands a batch to instead of building packets:
#: ``sink(arrays, k, view)`` with rows ``0..k-1`` decoded and ``view`` the buffer their
#: payloads are in (valid only during the call).
BatchSink = Callable[[Columns, int, memoryview], None]


class BatchArrays:
    """The reused arrays a walker writes: columns, timestamps, counters."""

    def __init__(self, rows: int) -> None:
        # room for ``rows`` packets; a row length that is a multiple of 4 KiB would put the
        # walker's 15 writes per packet in one cache set (see reader_fast.CHUNK_PACKETS), so
        # such lengths get one cache line more
        rows = rows + 8 if rows % 512 == 0 else rows
        self.ts = np.zeros(rows, np.float64)
        self.cols = np.zeros((len(COLUMNS), rows), np.int64)
        self.counts = np.zeros(1 + len(LIVE_SKIP_REASONS), np.int64)
        self.notes = np.zeros(len(NOTES), np.int64)
        self.big = sys.byteorder == "big"

    def take_counts(self) -> tuple[int, dict[str, int]]:
        """(messages, skipped by reason) since the last call; resets the counters."""
        skipped = {
            LIVE_SKIP_REASONS[i]: int(n) for i, n in enumerate(self.counts[1:].tolist()) if n
        }
        messages = int(self.counts[0])
        self.counts[:] = 0
        return messages, skipped


_NEW = object.__new__
(
    _S_TS,
    _S_WIRE,
    _S_IPLEN,
    _S_VER,
    _S_SRC,
    _S_DST,
    _S_PROTO,
    _S_SPORT,
    _S_DPORT,
    _S_FLAGS,
    _S_SEQ,
    _S_PLEN,
    _S_PAYLOAD,
) = (getattr(Packet, name).__set__ for name in Packet.__slots__)


class PacketBuilder:
    """Column rows -> :class:`Packet` records, with address strings cached.

    Packets are filled through their slots directly: the frozen dataclass ``__init__``
    (one ``object.__setattr__`` call per field) costs twice as much, and the fields are
    the same. The caches hold at most ``max_addresses`` strings each; when full they start
    again empty.
    """

    def __init__(self, max_addresses: int = 65536) -> None:
        self._v4: dict[int, str] = {}
        self._v6: dict[tuple[int, int], str] = {}
        self._max = max_addresses

    def _name4(self, addr: int) -> str:
        if len(self._v4) >= self._max:
            self._v4.clear()
        name = self._v4[addr] = socket.inet_ntop(socket.AF_INET, addr.to_bytes(4, "big"))
        return name

    def _name6(self, hi: int, lo: int) -> str:
        if len(self._v6) >= self._max:
            self._v6.clear()
        raw = (hi & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") + (lo & 0xFFFFFFFFFFFFFFFF).to_bytes(
            8, "big"
        )
        name = self._v6[(hi, lo)] = socket.inet_ntop(socket.AF_INET6, raw)
        return name

    def sink(self, out: list[Packet]) -> BatchSink:
        """A sink that appends the packets of each batch to ``out``."""
        return lambda arrays, k, view: self.build(arrays, k, view, out)

    def build(
        self, arrays: Columns, k: int, view: memoryview, out: list[Packet], start: int = 0
    ) -> None:
        """Append the packets of rows ``start..k-1`` of ``arrays`` to ``out``; payloads
        are copied out of ``view`` (the buffer the walker read)."""
        if k <= start:
            return
        v4 = self._v4
        v6 = self._v6
        rows = arrays.cols[:, start:k].tolist()
        for (
            t,
            wire,
            ip_len,
            ver,
            shi,
            slo,
            dhi,
            dlo,
            proto,
            sport,
            dport,
            flags,
            seq,
            plen,
            at,
            cap,
        ) in zip(arrays.ts[start:k].tolist(), *rows, strict=True):
            if ver == 4:
                src = v4.get(slo) or self._name4(slo)
                dst = v4.get(dlo) or self._name4(dlo)
            else:
                src = v6.get((shi, slo)) or self._name6(shi, slo)
                dst = v6.get((dhi, dlo)) or self._name6(dhi, dlo)
            p = _NEW(Packet)
            _S_TS(p, t)
            _S_WIRE(p, wire)
            _S_IPLEN(p, ip_len)
            _S_VER(p, ver)
            _S_SRC(p, src)
            _S_DST(p, dst)
            _S_PROTO(p, proto)
            _S_SPORT(p, sport)
            _S_DPORT(p, dport)
            _S_FLAGS(p, flags)
            _S_SEQ(p, seq)
            _S_PLEN(p, plen)
            _S_PAYLOAD(p, view[at : at + cap].tobytes() if cap else b"")
            out.append(p)


# TPACKET_V3 ring (linux/if_packet.h): blocks of frames the kernel hands over whole
_TP_STATUS_USER = 1
_BLOCK_STATUS, _BLOCK_NUM_PKTS, _BLOCK_FIRST = 8, 12, 16
TP3_HEADER = 48  # sizeof(struct tpacket3_hdr): no frame slot is shorter


@jit(
    "UniTuple(int64, 2)(uint8[::1], int64, int64, int64, boolean, int64, "
    "float64[::1], int64[:, ::1], int64[::1], int64[::1])",
    cache=True,
    nogil=True,
)
def walk_tpacket(
    ring: U8,
    block_size: int,
    n_blocks: int,
    first: int,
    big: bool,
    linktype: int,
    ts: npt.NDArray[np.float64],
    cols: I64,
    counts: I64,
    notes: I64,
) -> tuple[int, int]:
    """Decode the frames (of pcap link type ``linktype``) of the ready blocks from block
    ``first`` on (in ring order,
    stopping at the first block the kernel still owns, and before a block that might not
    fit in the rows left of ``ts``); return (packets written, blocks walked). The caller
    hands the walked blocks back with :func:`release_blocks` once it has copied what it
    needs out of them.

    ``counts[0]`` counts frames, ``counts[1 + code]`` skipped ones by reason code; a frame
    header pointing outside its block counts as ``"bad-netlink"`` and ends that block.
    """
    k = 0
    cap = ts.shape[0]
    walked = 0
    while walked < n_blocks and cap - k >= block_size // TP3_HEADER:
        base = ((first + walked) % n_blocks) * block_size
        if not _u32n(ring, base + _BLOCK_STATUS, big) & _TP_STATUS_USER:
            break
        walked += 1
        end = base + block_size
        p = base + _u32n(ring, base + _BLOCK_FIRST, big)
        for _ in range(_u32n(ring, base + _BLOCK_NUM_PKTS, big)):
            if p < base or p + TP3_HEADER > end or k >= cap:
                counts[1 + _BAD_NETLINK] += 1
                break
            snap = _u32n(ring, p + 12, big)
            s = p + _u16n(ring, p + 24, big)
            if s + snap > end:
                counts[1 + _BAD_NETLINK] += 1
                break
            counts[0] += 1
            wire = max(_u32n(ring, p + 16, big), snap)
            reason = decode_frame(ring, s, snap, linktype, wire, cols, k, notes)
            if reason:
                counts[1 + reason] += 1
            else:
                ts[k] = (
                    np.float64(_u32n(ring, p + 4, big)) + np.float64(_u32n(ring, p + 8, big)) / 1e9
                )
                k += 1
            nxt = _u32n(ring, p, big)
            if nxt == 0:
                break
            p += nxt
    return k, walked


@jit("none(uint8[::1], int64, int64, int64, int64)", cache=True, nogil=True)
def release_blocks(ring: U8, block_size: int, n_blocks: int, first: int, count: int) -> None:
    """Hand ``count`` blocks from ``first`` on back to the kernel (TP_STATUS_KERNEL)."""
    for i in range(count):
        base = ((first + i) % n_blocks) * block_size + _BLOCK_STATUS
        ring[base] = 0
        ring[base + 1] = 0
        ring[base + 2] = 0
        ring[base + 3] = 0
