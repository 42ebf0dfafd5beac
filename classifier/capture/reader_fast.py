# mypy: disable-error-code="return-value,assignment,arg-type"
# (the compiled helpers compute with numpy int64 scalars, which mypy does not equate with int)
"""Raw pcap/pcapng bytes -> packet column arrays, in compiled loops (the fast read path).

The compiled twin of :func:`classifier.capture.open_capture` (``reader.py``, ``pcap.py``,
``pcapng.py``). :func:`iter_chunks` reads a capture file through one fixed, reused buffer
(so memory does not grow with the file) and hands each buffer-full to a numba-compiled
walker that reads the record headers and decodes each frame with the shared compiled
decoder (:func:`classifier.capture.decode_fast.decode_frame`, the twin of
:mod:`classifier.capture.decode`), writing one column entry per TCP/UDP packet (rows
:data:`~classifier.capture.decode_fast.COLUMNS`). A
:class:`ColumnChunk` holds those columns plus the buffer, so the few payloads someone needs
(names in clear) can be sliced out before the next chunk is read.

Decoding rules, skip reasons (``ReadStats.skipped``) and notes (``ReadStats.noted``) match
the reference reader (:func:`classifier.capture.open_capture`) record for record.

What this path does not do itself raises :class:`ColumnsUnsupported` (a
:class:`~classifier.errors.CaptureError`) before or while reading, so that a caller can
fall back to the reference reader for that file: gzip-compressed files, any damaged record
or block, a last record cut short, the modified (Kuznetzov) pcap format, unsupported link
types declared in a pcap header or in every pcapng interface before a packet, and pcapng
timestamp resolutions finer than 2^-53 s or timestamps too large for 64-bit ticks.
Simple Packet Blocks and obsolete Packet Blocks are read natively.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.capture.decode import is_known_linktype
from classifier.capture.decode_fast import (
    C_PAT,
    C_PCAP,
    COLUMNS,
    NOTES,
    SKIP_REASONS,
    decode_frame,
    known_linktype,
    u32,
)
from classifier.capture.reader import open_capture
from classifier.capture.stats import ReadStats
from classifier.compiled import jit
from classifier.errors import CaptureError

__all__ = [
    "CHUNK_PACKETS",
    "ColumnChunk",
    "ColumnsUnsupported",
    "iter_chunks",
]

logger = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]

_MAX_CAPLEN = 262144
_MAX_BLOCK = 16 * 1024 * 1024
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_BOM = 0x1A2B3C4D
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D

# walker status codes
_ST_NEED_MORE = 0  # the next record/block is not wholly in the buffer
_ST_END = 1  # the buffer ended exactly at a record boundary (and it was the end of file)
_ST_FULL = 2  # the column arrays are full
_ST_CONTROL = 3  # a section header or interface block: Python handles it
_ST_DAMAGED = 4  # something the reference treats as damage or cut short

_DEFAULT_BUFFER = 8 * 1024 * 1024
#: Packets per chunk (the length of each row of ``cols``): one cache line more than a power
#: of two. The walkers write entry k of all 15 rows per packet; rows a multiple of 4 KiB
#: apart would put those 15 writes in one cache set, evicting each other (the walk took
#: ~1.5x as long with 1 << 17).
CHUNK_PACKETS = (1 << 17) + 8
_DEFAULT_PACKETS = CHUNK_PACKETS


class ColumnsUnsupported(CaptureError):
    """The compiled reader does not handle this file (or this spot of it); the reference
    reader (:func:`classifier.capture.open_capture`) does: fall back to it."""


@dataclass(slots=True)
class ColumnChunk:
    """The TCP/UDP packets decoded from one buffer-full of a capture, as columns.

    ``ts``: seconds (float64, bit-identical to the reference reader's ``Packet.ts``);
    ``cols``: int64 rows named by :data:`COLUMNS` (addresses as two 64-bit halves, IPv4 in
    ``*_lo`` with ``*_hi`` 0; ``payload_at`` is the payload's offset in ``buffer``,
    ``payload_cap`` how many payload bytes were captured). The arrays and ``buffer`` are
    reused: they are only valid until the next chunk is requested from the iterator (copy
    what must outlive that).
    """

    ts: npt.NDArray[np.float64]
    cols: I64
    buffer: npt.NDArray[np.uint8]
    first_record_offset: int

    def __len__(self) -> int:
        return len(self.ts)

    def col(self, index: int) -> I64:
        """One column (a row of ``cols``) by its index (``C_*`` constants)."""
        return self.cols[index]

    def payload(self, i: int) -> bytes:
        """The captured transport payload bytes of packet ``i`` of this chunk."""
        at = int(self.cols[C_PAT, i])
        return self.buffer[at : at + int(self.cols[C_PCAP, i])].tobytes()


# ---------------------------------------------------------------------------------------
# compiled record walkers


@jit(
    "UniTuple(int64, 3)(uint8[::1], int64, int64, boolean, float64, int64, boolean, "
    "float64[::1], int64[:, ::1], int64[::1], int64[::1])",
    cache=True,
    nogil=True,
)
def _walk_pcap(
    b: npt.NDArray[np.uint8],
    valid: int,
    pos: int,
    big: bool,
    divisor: float,
    linktype: int,
    eof: bool,
    ts: npt.NDArray[np.float64],
    cols: I64,
    counts: I64,
    notes: I64,
) -> tuple[int, int, int]:
    """Walk pcap records in ``b[pos:valid]``; return (packets, position, status).

    ``counts[0]`` counts records, ``counts[1 + reason]`` skipped frames by reason code.
    """
    cap = ts.shape[0]
    k = 0
    while True:
        if k >= cap:
            return k, pos, _ST_FULL
        if pos + 16 > valid:
            if pos == valid and eof:
                return k, pos, _ST_END
            return k, pos, (_ST_DAMAGED if eof else _ST_NEED_MORE)
        sec = u32(b, pos, big)
        frac = u32(b, pos + 4, big)
        incl = u32(b, pos + 8, big)
        orig = u32(b, pos + 12, big)
        if incl > _MAX_CAPLEN:
            return k, pos, _ST_DAMAGED
        if pos + 16 + incl > valid:
            return k, pos, (_ST_DAMAGED if eof else _ST_NEED_MORE)
        counts[0] += 1
        wire = orig if orig >= incl else incl
        reason = decode_frame(b, pos + 16, incl, linktype, wire, cols, k, notes)
        if reason == 0:
            ts[k] = np.float64(sec) + np.float64(frac) / divisor
            k += 1
        else:
            counts[1 + reason] += 1
        pos += 16 + incl


@jit(
    "UniTuple(int64, 3)(uint8[::1], int64, int64, boolean, boolean, int64[::1], "
    "uint64[::1], int64[::1], int64[::1], int64, boolean, float64[::1], float64[::1],"
    " int64[:, ::1], int64[::1], int64[::1])",
    cache=True,
    nogil=True,
)
def _walk_pcapng(
    b: npt.NDArray[np.uint8],
    valid: int,
    pos: int,
    big: bool,
    eof: bool,
    if_link: I64,
    if_units: npt.NDArray[np.uint64],
    if_offset: I64,
    if_snap: I64,
    n_if: int,
    any_known: bool,
    state: npt.NDArray[np.float64],
    ts: npt.NDArray[np.float64],
    cols: I64,
    counts: I64,
    notes: I64,
) -> tuple[int, int, int]:
    """Walk pcapng blocks in ``b[pos:valid]``; stop at section headers and interface blocks
    (status _ST_CONTROL) so that the caller parses them. ``state[0]`` is the timestamp of
    the last packet (for Simple Packet Blocks)."""
    cap = ts.shape[0]
    k = 0
    while True:
        if k >= cap:
            return k, pos, _ST_FULL
        if pos + 12 > valid:
            if pos == valid and eof:
                return k, pos, _ST_END
            return k, pos, (_ST_DAMAGED if eof else _ST_NEED_MORE)
        btype = u32(b, pos, big)
        if btype == 0x0A0D0D0A:
            return k, pos, _ST_CONTROL
        blen = u32(b, pos + 4, big)
        if blen < 12 or blen % 4 != 0 or blen > _MAX_BLOCK:
            return k, pos, _ST_DAMAGED
        if pos + blen > valid:
            return k, pos, (_ST_DAMAGED if eof else _ST_NEED_MORE)
        if u32(b, pos + blen - 4, big) != blen:
            return k, pos, _ST_DAMAGED
        if btype == 1:
            return k, pos, _ST_CONTROL
        body = pos + 8
        body_len = blen - 12
        if btype == 6 or btype == 2 or btype == 3:
            counts[0] += 1
            if btype == 3:
                if body_len < 4:
                    return k, pos, _ST_DAMAGED
                if n_if == 0:
                    return k, pos, _ST_DAMAGED
                iface = 0
                orig = u32(b, body, big)
                caplen = min(orig, body_len - 4)
                if if_snap[0]:
                    caplen = min(caplen, if_snap[0])
                data_at = body + 4
                t = state[0]
            else:
                if body_len < 20:
                    return k, pos, _ST_DAMAGED
                if btype == 6:
                    iface = u32(b, body, big)
                else:
                    iface = (u32(b, body, big) >> 16) if big else (u32(b, body, big) & 0xFFFF)
                high = np.uint64(u32(b, body + 4, big))
                low = np.uint64(u32(b, body + 8, big))
                caplen = u32(b, body + 12, big)
                orig = u32(b, body + 16, big)
                if caplen > _MAX_CAPLEN:
                    return k, pos, _ST_DAMAGED
                if 20 + caplen > body_len:
                    return k, pos, _ST_DAMAGED
                if iface >= n_if:
                    return k, pos, _ST_DAMAGED
                ticks = (high << np.uint64(32)) | low
                units = if_units[iface]
                whole = ticks // units
                part = ticks % units
                if whole > np.uint64(1 << 62):
                    return k, pos, _ST_DAMAGED
                t = np.float64(np.int64(whole) + if_offset[iface]) + (
                    np.float64(part) / np.float64(units)
                )
                state[0] = t
                data_at = body + 20
                orig = orig if orig >= caplen else caplen
            linktype = if_link[iface]
            known = known_linktype(linktype)
            if not known:
                if not any_known:
                    return k, pos, _ST_DAMAGED
                counts[1 + 1] += 1
            else:
                reason = decode_frame(b, data_at, caplen, linktype, orig, cols, k, notes)
                if reason == 0:
                    ts[k] = t
                    k += 1
                else:
                    counts[1 + reason] += 1
        pos += blen


# ---------------------------------------------------------------------------------------
# Python driver


class _Buffer:
    """A read buffer over a file: ``data[:valid]`` holds bytes from ``base`` on.
    ``last_chunk`` is the number of the last chunk that points into it."""

    def __init__(self, f: io.FileIO, size: int) -> None:
        self.f = f
        self.data = np.empty(size, dtype=np.uint8)
        self.valid = 0
        self.base = 0
        self.eof = False
        self.last_chunk = -1

    def refill(self, src: _Buffer, keep_from: int) -> None:
        """Hold ``src``'s bytes from ``keep_from`` on (``src`` may be this buffer), then
        read more of the file after them. A buffer that the rest fills wholly (a block
        larger than it) doubles."""
        rest = src.valid - keep_from
        size = len(src.data) * 2 if rest == len(src.data) else len(src.data)
        if src is self:
            if keep_from and rest:
                self.data[:rest] = self.data[keep_from : self.valid]
            if size > len(self.data):
                grown = np.empty(size, dtype=np.uint8)
                grown[:rest] = self.data[:rest]
                self.data = grown
        else:
            if size > len(self.data):
                self.data = np.empty(size, dtype=np.uint8)
            self.data[:rest] = src.data[keep_from : src.valid]
        self.base = src.base + keep_from
        self.valid = rest
        view = memoryview(self.data)
        while self.valid < len(self.data):
            got = self.f.readinto(view[self.valid :])
            if not got:
                self.eof = True
                break
            self.valid += got


class _Stopped(Exception):
    """The caller stopped reading: the reading thread ends quietly."""


class _Chunker:
    """The arrays and read buffers that chunks point into, in ``depth`` sets used in turn.

    ``depth`` 1: one set, reused for every chunk (a chunk is valid until the next one is
    asked for). ``depth`` 2: the reading thread fills one set while the caller holds a
    chunk of the other; it waits (:meth:`arrays`, :meth:`refill`) before touching a set
    or a buffer that a chunk the caller has not :meth:`release`-d points into.
    """

    def __init__(self, path: str, buffer_bytes: int, max_packets: int, depth: int) -> None:
        self.f = io.FileIO(path, "rb")  # closed by close()
        self.depth = depth
        self.sets = [_new_arrays(max_packets) for _ in range(depth)]
        self.buffers = [_Buffer(self.f, buffer_bytes) for _ in range(depth)]
        self.made = 0  # chunks handed out
        self.released = 0  # chunks the caller is done with
        self.stopped = False
        self.cond = threading.Condition()

    def first(self) -> _Buffer:
        buf = self.buffers[0]
        buf.refill(buf, 0)
        return buf

    def arrays(self) -> tuple[npt.NDArray[np.float64], I64]:
        """The arrays for the next chunk (free once the chunk ``depth`` back is done)."""
        self._wait(self.made - self.depth + 1)
        return self.sets[self.made % self.depth]

    def chunk(
        self, buf: _Buffer, ts: npt.NDArray[np.float64], cols: I64, k: int, start: int
    ) -> ColumnChunk:
        buf.last_chunk = self.made
        self.made += 1
        return ColumnChunk(ts[:k], cols[:, :k], buf.data, start)

    def refill(self, buf: _Buffer, keep_from: int) -> _Buffer:
        """The buffer to go on in: ``buf`` itself, or the other one once no chunk the
        caller holds points into it."""
        if self.depth == 1:
            buf.refill(buf, keep_from)
            return buf
        other = self.buffers[1] if buf is self.buffers[0] else self.buffers[0]
        self._wait(other.last_chunk + 1)
        other.refill(buf, keep_from)
        return other

    def release(self) -> None:
        """The caller is done with the oldest chunk it holds."""
        with self.cond:
            self.released += 1
            self.cond.notify()

    def stop(self) -> None:
        """The caller stops reading: a waiting reading thread gives up."""
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def close(self) -> None:
        self.f.close()

    def _wait(self, released: int) -> None:
        if self.depth == 1:
            return
        with self.cond:
            while self.released < released and not self.stopped:
                self.cond.wait()
            if self.stopped:
                raise _Stopped


@dataclass(slots=True)
class _Ifaces:
    link: I64
    units: npt.NDArray[np.uint64]
    offset: I64
    snap: I64
    n: int = 0
    any_known: bool = False

    @classmethod
    def empty(cls, size: int = 16) -> _Ifaces:
        return cls(
            np.zeros(size, np.int64),
            np.ones(size, np.uint64),
            np.zeros(size, np.int64),
            np.zeros(size, np.int64),
        )

    def add(self, linktype: int, snaplen: int, units: int, offset: int) -> None:
        if self.n == len(self.link):
            size = 2 * self.n
            self.link = np.resize(self.link, size)
            self.units = np.resize(self.units, size)
            self.offset = np.resize(self.offset, size)
            self.snap = np.resize(self.snap, size)
        i = self.n
        self.link[i], self.units[i], self.offset[i], self.snap[i] = linktype, units, offset, snaplen
        self.n += 1


def _unsupported(path: str, what: str, offset: int | None = None) -> ColumnsUnsupported:
    return ColumnsUnsupported(
        path, f"{what}; the compiled reader leaves this file to the reference reader", offset
    )


def _parse_idb(path: str, body: bytes, order: str, at: int) -> tuple[int, int, int, int]:
    """(linktype, snaplen, ticks per second, offset seconds) of an interface block body."""
    if len(body) < 8:
        raise _unsupported(path, "interface description block too short", at)
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body, 0)
    units = 1_000_000
    offset = 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        pos += 4
        if code == 0:
            break
        if pos + length > len(body):
            raise _unsupported(path, "interface option runs past its block", at)
        if code == 9 and length >= 1:
            res = body[pos]
            exp = res & 0x7F
            if res & 0x80:
                units = 1 << exp
            else:
                units = 10**exp if exp <= 18 else 0
        elif code == 14 and length >= 8:
            offset = struct.unpack_from(order + "q", body, pos)[0]
        pos += (length + 3) & ~3
    if not 0 < units <= 1 << 53 or abs(offset) > 1 << 60:
        raise _unsupported(path, "timestamp resolution or offset out of the compiled range", at)
    return linktype, snaplen, units, offset


def _new_arrays(packets: int) -> tuple[npt.NDArray[np.float64], I64]:
    return np.empty(packets, np.float64), np.empty((len(COLUMNS), packets), np.int64)


def _fill_stats(stats: ReadStats, counts: I64, notes: I64) -> None:
    stats.records = int(counts[0])
    skipped = {
        SKIP_REASONS[i]: int(counts[1 + i]) for i in range(1, len(SKIP_REASONS)) if counts[1 + i]
    }
    stats.skipped.clear()
    stats.skipped.update(skipped)
    noted = {NOTES[i]: int(notes[i]) for i in range(len(NOTES)) if notes[i]}
    stats.noted.clear()
    stats.noted.update(noted)


def iter_chunks(
    path: str | os.PathLike[str],
    stats: ReadStats | None = None,
    *,
    buffer_bytes: int = _DEFAULT_BUFFER,
    max_packets: int = _DEFAULT_PACKETS,
    ahead: bool = False,
) -> Iterator[ColumnChunk]:
    """Decode the TCP/UDP packets of a pcap or pcapng file into column chunks.

    Each chunk holds at most ``max_packets`` packets; its arrays and ``buffer`` (and so
    its payloads) are only valid until the next chunk is requested. With ``ahead`` a
    second thread reads and decodes the next chunk while the caller works on this one
    (the compiled walk and the file reads release the GIL; two sets of arrays and two
    buffers, so ~2x the memory; same chunks, same order, same errors at the same point).
    ``stats`` gets the same counts as the reference reader gives (records, packets,
    skipped, noted, bytes_read, linktypes, format), as the chunks are read.

    Raises :class:`~classifier.errors.CaptureError` at once for a missing, empty or
    non-capture file (the same checks and messages as :func:`open_capture`), and
    :class:`ColumnsUnsupported` (a CaptureError) at once or while iterating for what only
    the reference reader handles (see the module docstring). Packets already yielded stay
    valid; a caller falling back must discard them.
    """
    name = os.fspath(path)
    st = stats if stats is not None else ReadStats()
    open_capture(name, stats=st)  # the reference checks: raises CaptureError now
    if st.format.endswith("+gzip"):
        raise _unsupported(name, "gzip-compressed capture")
    chunker = _Chunker(name, max(buffer_bytes, 1 << 20), max_packets, 2 if ahead else 1)
    walk = _pcap_chunks if st.format == "pcap" else _pcapng_chunks
    try:
        if ahead:
            yield from _in_thread(walk(name, chunker, st), chunker)
        else:
            yield from walk(name, chunker, st)
    finally:
        chunker.close()


def _in_thread(chunks: Iterator[ColumnChunk], chunker: _Chunker) -> Iterator[ColumnChunk]:
    """``chunks`` produced by a second thread, at most one chunk ahead of the caller (the
    chunker makes the thread wait before it reuses what the caller may still hold)."""
    # (chunk, None) per chunk, then (None, None) at the end or (None, error)
    handed: queue.SimpleQueue[tuple[ColumnChunk | None, BaseException | None]]
    handed = queue.SimpleQueue()

    def produce() -> None:
        try:
            for chunk in chunks:
                handed.put((chunk, None))
        except _Stopped:
            return
        except BaseException as exc:  # handed to the caller, raised there in order
            handed.put((None, exc))
            return
        handed.put((None, None))

    thread = threading.Thread(target=produce, name="shortflow-read", daemon=True)
    thread.start()
    try:
        while True:
            chunk, error = handed.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
            chunker.release()
    finally:
        chunker.stop()
        thread.join()


def _pcap_chunks(name: str, chunker: _Chunker, st: ReadStats) -> Iterator[ColumnChunk]:
    buf = chunker.first()
    head = buf.data[:24].tobytes()
    if len(head) < 24 or buf.valid < 24:
        raise _unsupported(name, "pcap file header cut short", 0)
    order = ""
    for candidate in "<>":
        magic = struct.unpack_from(candidate + "I", head, 0)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            order = candidate
            break
    if not order:
        raise _unsupported(name, "modified pcap format", 0)
    divisor = 1e9 if magic == _MAGIC_NS else 1e6
    linktype = struct.unpack_from(order + "I", head, 20)[0] & 0xFFFF
    st.linktypes.add(linktype)
    if not is_known_linktype(linktype):
        raise _unsupported(name, f"unsupported link type {linktype}", 20)
    counts = np.zeros(1 + len(SKIP_REASONS), np.int64)
    notes = np.zeros(len(NOTES), np.int64)
    pos = 24
    st.bytes_read = 24
    while True:
        start = buf.base + pos
        ts, cols = chunker.arrays()
        k, pos, status = _walk_pcap(
            buf.data,
            buf.valid,
            pos,
            order == ">",
            divisor,
            linktype,
            buf.eof,
            ts,
            cols,
            counts,
            notes,
        )
        _fill_stats(st, counts, notes)
        st.packets += k
        st.bytes_read = buf.base + pos
        if k:
            yield chunker.chunk(buf, ts, cols, k, start)
        if status == _ST_END:
            return
        if status == _ST_DAMAGED:
            raise _unsupported(name, "damaged or cut-short record", buf.base + pos)
        if status == _ST_NEED_MORE:
            buf = chunker.refill(buf, pos)
            pos = 0


def _pcapng_chunks(name: str, chunker: _Chunker, st: ReadStats) -> Iterator[ColumnChunk]:
    counts = np.zeros(1 + len(SKIP_REASONS), np.int64)
    notes = np.zeros(len(NOTES), np.int64)
    state = np.zeros(1, np.float64)
    ifaces = _Ifaces.empty()
    order = "<"
    pos = 0
    first = True
    buf = chunker.first()
    while True:
        start = buf.base + pos
        ts, cols = chunker.arrays()
        k, pos, status = _walk_pcapng(
            buf.data,
            buf.valid,
            pos,
            order == ">",
            buf.eof,
            ifaces.link,
            ifaces.units,
            ifaces.offset,
            ifaces.snap,
            ifaces.n,
            ifaces.any_known,
            state,
            ts,
            cols,
            counts,
            notes,
        )
        _fill_stats(st, counts, notes)
        st.packets += k
        st.bytes_read = buf.base + pos
        if k:
            yield chunker.chunk(buf, ts, cols, k, start)
        if status == _ST_END:
            if first:
                raise _unsupported(name, "pcapng section header cut short", 0)
            return
        if status == _ST_DAMAGED:
            raise _unsupported(name, "damaged or cut-short block", buf.base + pos)
        if status == _ST_NEED_MORE:
            buf = chunker.refill(buf, pos)
            pos = 0
            continue
        if status == _ST_CONTROL:
            if buf.valid - pos < 12:
                if buf.eof:
                    raise _unsupported(name, "block cut short", buf.base + pos)
                buf = chunker.refill(buf, pos)
                pos = 0
                continue
            order, size = _control_block(name, buf, pos, order, ifaces, first)
            if size == 0:  # not wholly in the buffer yet
                if buf.eof:
                    raise _unsupported(name, "block cut short", buf.base + pos)
                buf = chunker.refill(buf, pos)
                pos = 0
                continue
            for lt in ifaces.link[: ifaces.n]:
                st.linktypes.add(int(lt))
            first = False
            pos += size
            st.bytes_read = buf.base + pos


def _control_block(
    name: str, buf: _Buffer, pos: int, order: str, ifaces: _Ifaces, first: bool
) -> tuple[str, int]:
    """Parse the section header or interface block at ``pos``; return (byte order, block
    length), length 0 when the block is not wholly in the buffer."""
    at = buf.base + pos
    head = buf.data[pos : pos + 12].tobytes()
    if head[:4] == _PCAPNG_MAGIC:
        if struct.unpack_from("<I", head, 8)[0] == _BOM:
            order = "<"
        elif struct.unpack_from(">I", head, 8)[0] == _BOM:
            order = ">"
        else:
            raise _unsupported(name, "bad byte-order magic in section header", at)
    btype, blen = struct.unpack_from(order + "II", head, 0)
    if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
        raise _unsupported(name, f"block length {blen} is absurd", at)
    if pos + blen > buf.valid:
        return order, 0
    block = buf.data[pos : pos + blen].tobytes()
    if struct.unpack_from(order + "I", block, blen - 4)[0] != blen:
        raise _unsupported(name, "block length does not match its trailer", at)
    if btype == 0x0A0D0D0A:
        major = struct.unpack_from(order + "H", block, 12)[0] if blen >= 16 else 0
        if major != 1:
            raise _unsupported(name, f"unsupported pcapng version {major}", at)
        ifaces.n = 0  # a new section forgets its interfaces (not whether one was known)
    elif btype == 1:
        linktype, snaplen, units, offset = _parse_idb(name, block[8 : blen - 4], order, at)
        ifaces.add(linktype, snaplen, units, offset)
        if is_known_linktype(linktype):
            ifaces.any_known = True
    return order, blen
