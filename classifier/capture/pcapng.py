"""Block walker for pcapng files.

Handles several sections (each Section Header Block sets the byte order and resets the
interface list), several interfaces (an Interface Description Block per interface with its
link type, snap length and the ``if_tsresol`` / ``if_tsoffset`` options), Enhanced Packet
Blocks, Simple Packet Blocks (interface 0, no timestamp: the previous packet's timestamp
is used) and the obsolete Packet Block. Every other block type is skipped by its length.

Damage handling mirrors :mod:`classifier.capture.pcap`: a block cut short at the end of the
file sets ``stats.truncated_at`` and stops with a warning; a block whose length fields are
inconsistent is :class:`CaptureError` unless ``skip_bad=True``, in which case it is counted
as ``"bad-record"`` and skipped by its length when the length is trustworthy, otherwise the
walker scans forward (4-byte steps) for the next plausible block.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from classifier.capture.decode import is_known_linktype
from classifier.capture.pcap import MAX_CAPLEN, RawFrame
from classifier.capture.stats import ReadStats
from classifier.errors import CaptureError

__all__ = ["PCAPNG_MAGIC", "iter_pcapng"]

logger = logging.getLogger(__name__)

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_OPB = 0x00000002
_SPB = 0x00000003
_EPB = 0x00000006
_BOM = 0x1A2B3C4D
_KNOWN_BLOCKS = frozenset((_SHB, _IDB, _OPB, _SPB, 4, 5, _EPB, 7, 8, 9, 10, 0x0BAD, 0x40000BAD))
_MAX_BLOCK = 16 * 1024 * 1024
_SCAN_WINDOW = 4 * 1024 * 1024

_OPT_ENDOFOPT = 0
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_sec: int  # timestamp ticks per second
    offset_sec: int


class _Damaged(Exception):
    """Internal: a block is damaged; ``skip_to`` is where the next block should start."""

    def __init__(self, reason: str, skip_to: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skip_to = skip_to


def _parse_idb(body: bytes, order: str) -> _Interface:
    if len(body) < 8:
        raise _Damaged("interface description block too short", None)
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body, 0)
    units = 1_000_000
    tsoffset = 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        pos += 4
        if code == _OPT_ENDOFOPT:
            break
        if pos + length > len(body):
            raise _Damaged(f"interface option {code} runs past its block", None)
        if code == _OPT_TSRESOL and length >= 1:
            res = body[pos]
            exp = res & 0x7F
            if res & 0x80:
                if exp > 63:
                    raise _Damaged(f"if_tsresol 2^-{exp} out of range", None)
                units = 1 << exp
            else:
                if exp > 18:
                    raise _Damaged(f"if_tsresol 10^-{exp} out of range", None)
                units = 10**exp
        elif code == _OPT_TSOFFSET and length >= 8:
            tsoffset = struct.unpack_from(order + "q", body, pos)[0]
        pos += (length + 3) & ~3
    return _Interface(linktype, snaplen, units, tsoffset)


def _ts(iface: _Interface, high: int, low: int) -> float:
    ticks = (high << 32) | low
    units = iface.units_per_sec
    whole, part = divmod(ticks, units)
    return whole + iface.offset_sec + part / units


class _Walker:
    """State of one pass over a pcapng stream."""

    def __init__(self, f: IO[bytes], path: str, stats: ReadStats, skip_bad: bool) -> None:
        self.f = f
        self.path = path
        self.stats = stats
        self.skip_bad = skip_bad
        self.order = "<"
        self.ifaces: list[_Interface] = []
        self.any_known = False
        self.last_ts = 0.0
        self.offset = 0
        self.block_start = 0

    def frames(self) -> Iterator[RawFrame]:
        f = self.f
        first = True
        while True:
            start = self.offset
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                if first:
                    raise CaptureError(self.path, "pcapng section header cut short", 0)
                self._truncated(start, "block header")
                return
            try:
                btype, blen, body = self._read_block(head, start, first)
            except _Damaged as exc:
                if first:
                    raise CaptureError(
                        self.path, f"damaged pcapng section header: {exc.reason}", start
                    ) from None
                if exc.skip_to == -1:  # cut short at the end of the file
                    self._truncated(start, "block")
                    return
                if not self._skip_damaged(start, exc):
                    return
                continue
            first = False
            self.block_start = start
            self.offset = start + blen
            self.stats.bytes_read = self.offset
            try:
                frame = self._handle(btype, body)
            except _Damaged as exc:
                exc.skip_to = self.offset  # the block's length was consistent
                if not self._skip_damaged(start, exc):
                    return
                f.seek(self.offset)
                continue
            if frame is not None:
                yield frame

    def _read_block(self, head: bytes, start: int, first: bool) -> tuple[int, int, bytes]:
        """Read one whole block whose first 12 bytes are ``head``; return type, length, body."""
        f = self.f
        if head[:4] == PCAPNG_MAGIC:
            bom_le = struct.unpack_from("<I", head, 8)[0]
            if bom_le == _BOM:
                self.order = "<"
            elif struct.unpack_from(">I", head, 8)[0] == _BOM:
                self.order = ">"
            else:
                raise _Damaged("bad byte-order magic in section header", None)
        order = self.order
        btype, blen = struct.unpack_from(order + "II", head, 0)
        if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
            raise _Damaged(f"block length {blen} is absurd", None)
        rest = f.read(blen - 12)
        if len(rest) < blen - 12:
            # Cut short at the end, or a bad length with blocks after it?
            if _find_block(head + rest, 4, order, eof_at=len(head) + len(rest)) is None:
                raise _Damaged("cut short", -1)
            raise _Damaged(f"block length {blen} runs past the end while blocks follow", None)
        block = head + rest
        trailer = struct.unpack_from(order + "I", block, blen - 4)[0]
        if trailer != blen:
            raise _Damaged(f"block length {blen} does not match its trailer {trailer}", None)
        if btype == _SHB:
            major = struct.unpack_from(order + "H", block, 12)[0] if blen >= 16 else 0
            if major != 1:
                raise _Damaged(f"unsupported pcapng version {major}", start + blen)
        return btype, blen, block[8 : blen - 4]

    def _handle(self, btype: int, body: bytes) -> RawFrame | None:
        order = self.order
        stats = self.stats
        if btype == _EPB or btype == _OPB:
            stats.records += 1
            if btype == _EPB:
                if len(body) < 20:
                    raise _Damaged("enhanced packet block too short", None)
                iface_id, high, low, caplen, orig = struct.unpack_from(order + "IIIII", body, 0)
                data_at = 20
            else:
                if len(body) < 20:
                    raise _Damaged("packet block too short", None)
                iface_id, _drops, high, low, caplen, orig = struct.unpack_from(
                    order + "HHIIII", body, 0
                )
                data_at = 20
            if caplen > MAX_CAPLEN:
                raise _Damaged(f"captured length {caplen} is absurd (over {MAX_CAPLEN})", None)
            if data_at + caplen > len(body):
                raise _Damaged(f"captured length {caplen} runs past its block", None)
            if iface_id >= len(self.ifaces):
                raise _Damaged(f"packet names undeclared interface {iface_id}", None)
            iface = self.ifaces[iface_id]
            ts = _ts(iface, high, low)
            self.last_ts = ts
            return self._frame(
                iface, ts, orig if orig >= caplen else caplen, body[data_at : data_at + caplen]
            )
        if btype == _SPB:
            stats.records += 1
            if len(body) < 4:
                raise _Damaged("simple packet block too short", None)
            if not self.ifaces:
                raise _Damaged("simple packet block before any interface", None)
            iface = self.ifaces[0]
            orig = struct.unpack_from(order + "I", body, 0)[0]
            caplen = min(orig, len(body) - 4)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            return self._frame(iface, self.last_ts, orig, body[4 : 4 + caplen])
        if btype == _IDB:
            iface = _parse_idb(body, order)
            self.ifaces.append(iface)
            stats.linktypes.add(iface.linktype)
            if is_known_linktype(iface.linktype):
                self.any_known = True
            return None
        if btype == _SHB:
            self.ifaces = []
        return None

    def _frame(self, iface: _Interface, ts: float, wire: int, data: bytes) -> RawFrame | None:
        if not is_known_linktype(iface.linktype):
            if not self.any_known:
                raise CaptureError(
                    self.path,
                    f"unsupported link type {iface.linktype}; supported: Ethernet, Linux "
                    "SLL/SLL2, raw IP, BSD NULL/LOOP",
                    self.block_start,
                )
            skipped = self.stats.skipped
            skipped["unknown-linktype"] = skipped.get("unknown-linktype", 0) + 1
            return None
        return iface.linktype, ts, wire, data

    def _skip_damaged(self, start: int, exc: _Damaged) -> bool:
        """Count a damaged block and move past it; False when reading must stop."""
        if not self.skip_bad:
            raise CaptureError(
                self.path,
                f"damaged pcapng block: {exc.reason}; pass skip_bad=True (CLI --skip-bad) "
                "to skip damaged blocks",
                start,
            )
        stats = self.stats
        stats.skipped["bad-record"] = stats.skipped.get("bad-record", 0) + 1
        logger.warning("%s: damaged block at byte %d (%s); skipping", self.path, start, exc.reason)
        target = exc.skip_to
        if target is None:
            target = self._resync(start + 4)
            if target is None:
                logger.warning(
                    "%s: no plausible block after byte %d; stopped reading there",
                    self.path,
                    start,
                )
                stats.resync_failed_at = start
                return False
        self.offset = target
        stats.bytes_read = target
        self.f.seek(target)
        return True

    def _resync(self, begin: int) -> int | None:
        self.f.seek(begin)
        window = self.f.read(_SCAN_WINDOW)
        eof_at = len(window) if len(window) < _SCAN_WINDOW else None
        pos = _find_block(window, 0, self.order, eof_at)
        return None if pos is None else begin + pos

    def _truncated(self, offset: int, what: str) -> None:
        self.stats.truncated_at = offset
        logger.warning(
            "%s: capture cut short inside the last %s at byte %d; read up to there",
            self.path,
            what,
            offset,
        )


def _block_at(buf: bytes, pos: int, order: str) -> int | None:
    """Length of a plausible block starting at ``pos`` in ``buf`` (trailer checked)."""
    if pos + 12 > len(buf):
        return None
    btype, blen = struct.unpack_from(order + "II", buf, pos)
    if btype not in _KNOWN_BLOCKS or blen < 12 or blen % 4 or blen > _MAX_BLOCK:
        return None
    if pos + blen > len(buf):
        return None
    if struct.unpack_from(order + "I", buf, pos + blen - 4)[0] != blen:
        return None
    return blen


def _find_block(buf: bytes, start: int, order: str, eof_at: int | None) -> int | None:
    """First 4-aligned position >= ``start`` where a plausible block starts and is followed
    by another plausible block or by the end of the data at ``eof_at``."""
    pos = start
    while pos + 12 <= len(buf):
        blen = _block_at(buf, pos, order)
        if blen is not None:
            nxt = pos + blen
            if (eof_at is not None and nxt == eof_at) or _block_at(buf, nxt, order) is not None:
                return pos
        pos += 4
    return None


def iter_pcapng(
    f: IO[bytes], path: str, stats: ReadStats, skip_bad: bool = False
) -> Iterator[RawFrame]:
    """Yield (linktype, ts, wire_len, data) for every packet block of the pcapng stream ``f``.

    ``f`` must be positioned at the start of the file and be seekable. Packets of an
    interface with an unknown link type are counted as ``"unknown-linktype"`` and skipped.
    Raises CaptureError for a bad first section header, for packets whose interface has an
    unknown link type when no interface with a known one was declared before, and (unless
    ``skip_bad``) for a damaged block; the message names the file and the byte offset.
    """
    return _Walker(f, path, stats, skip_bad).frames()
