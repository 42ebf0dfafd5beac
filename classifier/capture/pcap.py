"""Record walker for classic pcap files (libpcap format).

Reads the 24-byte file header (micro- or nanosecond magic, either byte order) and then the
records one by one, keeping the byte offset of each so that every error can name it.
Protocol decoding is not done here (see :mod:`classifier.capture.decode`).

Damage handling:

* a record header cut short at the end of the file, or a record whose data runs past the
  end while nothing plausible follows, is a file cut short: reading stops there,
  ``stats.truncated_at`` gets the record's offset and a warning is logged;
* a record with an absurd length (over 256 KiB, or running past the end of the file while
  valid records follow it) is damage: :class:`CaptureError` by default, or with
  ``skip_bad=True`` the record is counted as ``"bad-record"`` and the walker scans forward
  for the next plausible record header (two consecutive plausible headers, or one that
  ends exactly at the end of the file). If none is found, reading stops with a warning.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import IO

from classifier.capture.decode import is_known_linktype
from classifier.capture.stats import ReadStats
from classifier.errors import CaptureError

__all__ = ["PCAP_MAGICS", "MAGIC_US", "MAGIC_NS", "MAX_CAPLEN", "RawFrame", "iter_pcap"]

logger = logging.getLogger(__name__)

# (linktype, timestamp in seconds, wire length, captured bytes)
RawFrame = tuple[int, float, int, bytes]

MAX_CAPLEN = 262144
_SCAN_WINDOW = 4 * 1024 * 1024
_MAX_TS_JUMP = 366 * 86400

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
_MAGIC_MODIFIED = 0xA1B2CD34
PCAP_MAGICS: frozenset[bytes] = frozenset(
    struct.pack(order + "I", magic)
    for order in "<>"
    for magic in (MAGIC_US, MAGIC_NS, _MAGIC_MODIFIED)
)

_HEADER_LEN = 24
_RECORD_LEN = 16


def _read_header(f: IO[bytes], path: str) -> tuple[str, int, int, int]:
    """Return (byte order, fraction divisor, snaplen, linktype) from the file header.

    Raises CaptureError when the header is cut short or the magic is not a pcap magic.
    """
    head = f.read(_HEADER_LEN)
    order = ""
    for candidate in "<>":
        if len(head) >= 4 and struct.unpack_from(candidate + "I", head, 0)[0] in (
            MAGIC_US,
            MAGIC_NS,
            _MAGIC_MODIFIED,
        ):
            order = candidate
            break
    if not order:
        raise CaptureError(path, f"not a pcap file (magic {head[:4].hex()})", 0)
    magic = struct.unpack_from(order + "I", head, 0)[0]
    if magic == _MAGIC_MODIFIED:
        raise CaptureError(
            path,
            "modified (Kuznetzov) pcap format is not supported; "
            "convert it with `editcap -F pcap IN OUT`",
            0,
        )
    if len(head) < _HEADER_LEN:
        raise CaptureError(
            path, f"pcap file header cut short ({len(head)} of {_HEADER_LEN} bytes)", 0
        )
    _maj, _min, _zone, _sigfigs, snaplen, linkfield = struct.unpack_from(order + "HHiIII", head, 4)
    divisor = 1_000_000_000 if magic == MAGIC_NS else 1_000_000
    return order, divisor, snaplen, linkfield & 0xFFFF


class _Plausible:
    """Checks whether 16 bytes look like a pcap record header (used to resynchronise)."""

    def __init__(self, order: str, divisor: int, snaplen: int) -> None:
        self._rec = struct.Struct(order + "IIII")
        self._divisor = divisor
        self._limit = snaplen if 0 < snaplen < MAX_CAPLEN else MAX_CAPLEN
        self.last_sec: int | None = None

    def length_at(self, buf: bytes, pos: int) -> int | None:
        """Return the record's captured length when the header at ``pos`` is plausible."""
        if pos + _RECORD_LEN > len(buf):
            return None
        sec, frac, incl, orig = self._rec.unpack_from(buf, pos)
        if not (0 < incl <= self._limit and incl <= orig <= MAX_CAPLEN):
            return None
        if frac >= self._divisor:
            return None
        if self.last_sec is not None and abs(sec - self.last_sec) > _MAX_TS_JUMP:
            return None
        return incl

    def find(self, buf: bytes, start: int, eof_at: int | None) -> int | None:
        """First position >= ``start`` in ``buf`` where a plausible chain of records starts.

        A chain is two plausible headers back to back, or one record that ends exactly at
        ``eof_at`` (the length of ``buf`` when it holds the rest of the file).
        """
        for pos in range(start, len(buf) - _RECORD_LEN + 1):
            incl = self.length_at(buf, pos)
            if incl is None:
                continue
            nxt = pos + _RECORD_LEN + incl
            if eof_at is not None and nxt == eof_at:
                return pos
            if self.length_at(buf, nxt) is not None:
                return pos
        return None


def iter_pcap(
    f: IO[bytes], path: str, stats: ReadStats, skip_bad: bool = False
) -> Iterator[RawFrame]:
    """Yield (linktype, ts, wire_len, data) for every record of the pcap stream ``f``.

    ``f`` must be positioned at the start of the file and be seekable.
    Raises CaptureError for a bad file header, an unknown link type, or (unless
    ``skip_bad``) a damaged record; the message names the file and the byte offset.
    """
    order, divisor, snaplen, linktype = _read_header(f, path)
    stats.linktypes.add(linktype)
    if not is_known_linktype(linktype):
        raise CaptureError(
            path,
            f"unsupported link type {linktype}; supported: Ethernet, Linux SLL/SLL2, raw IP, "
            "BSD NULL/LOOP (convert with editcap or re-capture on an IP interface)",
            20,
        )
    rec = struct.Struct(order + "IIII")
    unpack = rec.unpack
    plausible = _Plausible(order, divisor, snaplen)
    read = f.read
    offset = _HEADER_LEN
    stats.bytes_read = offset
    while True:
        head = read(_RECORD_LEN)
        if len(head) < _RECORD_LEN:
            if head:
                _truncated(path, stats, offset, "record header")
            return
        sec, frac, incl, orig = unpack(head)
        bad: str | None = None
        if incl > MAX_CAPLEN:
            bad = f"record length {incl} is absurd (over {MAX_CAPLEN})"
            data = b""
        else:
            data = read(incl)
            if len(data) < incl:
                if plausible.find(data, 0, len(data)) is None:
                    _truncated(path, stats, offset, "record")
                    return
                bad = f"record length {incl} runs past the end of the file while records follow"
        if bad is None:
            stats.records += 1
            offset += _RECORD_LEN + incl
            stats.bytes_read = offset
            plausible.last_sec = sec
            wire = orig if orig >= incl else incl
            yield linktype, sec + frac / divisor, wire, data
            continue
        if not skip_bad:
            raise CaptureError(
                path,
                f"damaged record: {bad}; pass skip_bad=True (CLI --skip-bad) to skip "
                "damaged records",
                offset,
            )
        stats.records += 1
        stats.skipped["bad-record"] = stats.skipped.get("bad-record", 0) + 1
        logger.warning("%s: damaged record at byte %d (%s); resynchronising", path, offset, bad)
        found = _resync(f, plausible, offset + 1)
        if found is None:
            logger.warning(
                "%s: no plausible record after byte %d; stopped reading there", path, offset
            )
            stats.resync_failed_at = offset
            return
        offset = found
        stats.bytes_read = offset
        f.seek(offset)


def _resync(f: IO[bytes], plausible: _Plausible, start: int) -> int | None:
    """Scan forward from byte ``start`` for a plausible record; return its offset or None."""
    f.seek(start)
    window = f.read(_SCAN_WINDOW)
    eof_at = len(window) if len(window) < _SCAN_WINDOW else None
    pos = plausible.find(window, 0, eof_at)
    return None if pos is None else start + pos


def _truncated(path: str, stats: ReadStats, offset: int, what: str) -> None:
    stats.truncated_at = offset
    logger.warning(
        "%s: capture cut short inside the last %s at byte %d; read up to there",
        path,
        what,
        offset,
    )
