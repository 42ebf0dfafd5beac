"""Writer for classic pcap files (libpcap format), the one every part of the repo uses.

Files are written little-endian with microsecond timestamps (magic ``0xA1B2C3D4``, version
2.4). The reader side is :mod:`classifier.capture.pcap`.

Public surface::

    from classifier.capture.pcap_writer import PcapWriter

    with PcapWriter("out.pcap", LINKTYPE_ETHERNET) as w:
        w.write(ts, frame)                  # wire length = len(frame)
        w.write(ts, frame[:96], len(frame))  # cut to 96 bytes, wire length kept

For hot loops (the live recorder, generators of millions of packets) the pieces are
public too: :func:`global_header`, :data:`RECORD_HEADER` (a precompiled
``struct.Struct``: ``RECORD_HEADER.pack(sec, usec, caplen, wire_len)``),
:func:`split_us`, :meth:`PcapWriter.write_us` (seconds and microseconds already split),
:func:`record_headers` (columns of record headers, for numpy writers) and
:meth:`PcapWriter.write_raw` (records already packed).
:func:`whole_records` finds where the last whole record of a file ends, for repairing a
file whose writer was killed in the middle of a record.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from classifier.capture.decode import LINKTYPE_ETHERNET, LINKTYPE_RAW
from classifier.capture.pcap import MAGIC_US, MAX_CAPLEN

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "GLOBAL_HEADER",
    "RECORD_HEADER",
    "DEFAULT_SNAPLEN",
    "global_header",
    "record",
    "record_headers",
    "split_us",
    "whole_records",
    "PcapWriter",
]

#: The 24-byte file header: magic, version major/minor, zone, sigfigs, snaplen, link type.
GLOBAL_HEADER = struct.Struct("<IHHiIII")
#: The 16-byte record header: seconds, microseconds, captured length, wire length.
RECORD_HEADER = struct.Struct("<IIII")
#: The snap length written when none is given (the largest record the reader accepts).
DEFAULT_SNAPLEN = MAX_CAPLEN
_VERSION = (2, 4)


def global_header(linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    """The 24-byte file header for ``linktype`` and ``snaplen``."""
    return GLOBAL_HEADER.pack(MAGIC_US, *_VERSION, 0, 0, snaplen, linktype)


def split_us(ts: float) -> tuple[int, int]:
    """(seconds, microseconds) of ``ts``, rounded to the nearest microsecond."""
    sec = int(ts)
    usec = int(round((ts - sec) * 1e6))
    if usec == 1_000_000:
        return sec + 1, 0
    return sec, usec


def record(ts: float, data: bytes, wire_len: int | None = None) -> bytes:
    """One record (header and captured bytes); ``wire_len`` defaults to ``len(data)``."""
    sec, usec = split_us(ts)
    return (
        RECORD_HEADER.pack(sec, usec, len(data), len(data) if wire_len is None else wire_len) + data
    )


def record_headers(
    sec: npt.ArrayLike, usec: npt.ArrayLike, caplen: npt.ArrayLike, wire_len: npt.ArrayLike
) -> npt.NDArray[np.uint8]:
    """Record headers for columns of equal length (or scalars): shape (n, 16), the bytes
    ``RECORD_HEADER.pack`` gives for each row, for writers that build records with numpy."""
    cols = np.broadcast_arrays(*(np.asarray(c, np.int64) for c in (sec, usec, caplen, wire_len)))
    heads = np.empty((len(cols[0]), 4), "<u4")
    for i, col in enumerate(cols):
        heads[:, i] = col
    return heads.view(np.uint8)


def whole_records(path: str | os.PathLike[str], min_caplen: int = 1) -> tuple[int, int]:
    """(bytes, records) of the whole records at the start of pcap ``path``, as written here.

    Counting stops at the first record that is cut short or whose captured length is outside
    ``min_caplen`` .. the snap length of :func:`global_header` (``DEFAULT_SNAPLEN``). Returns
    (0, 0) when even the file header is incomplete; truncating the file to the returned byte
    count leaves a valid pcap.
    """
    size = os.stat(path).st_size
    pos = GLOBAL_HEADER.size
    if size < pos:
        return 0, 0
    records = 0
    rec_len = RECORD_HEADER.size
    with open(path, "rb") as fh:
        fh.seek(pos)
        while True:
            head = fh.read(rec_len)
            if len(head) < rec_len:
                break
            incl = RECORD_HEADER.unpack(head)[2]
            if not min_caplen <= incl <= DEFAULT_SNAPLEN or pos + rec_len + incl > size:
                break
            fh.seek(incl, os.SEEK_CUR)
            pos += rec_len + incl
            records += 1
    return pos, records


class PcapWriter:
    """Writes a pcap to a path (created or truncated) or to an open binary file object.

    The file header is written on construction. A file object passed in is left open by
    :meth:`close` (only flushed); a path is opened and closed here. ``bytes_written``
    counts the header and every record.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        linktype: int,
        snaplen: int = DEFAULT_SNAPLEN,
    ) -> None:
        self._fh: BinaryIO
        self._own = isinstance(target, (str, os.PathLike))
        if isinstance(target, (str, os.PathLike)):
            self._fh = open(target, "wb")  # noqa: SIM115 (closed in close())
        else:
            self._fh = target
        self.linktype = linktype
        self.snaplen = snaplen
        self.records = 0
        header = global_header(linktype, snaplen)
        self._fh.write(header)
        self.bytes_written = len(header)

    def write(self, ts: float, data: bytes, wire_len: int | None = None) -> None:
        """Append one record; ``wire_len`` (the length on the wire) defaults to ``len(data)``."""
        sec, usec = split_us(ts)
        self.write_us(sec, usec, data, wire_len)

    def write_us(self, sec: int, usec: int, data: bytes, wire_len: int | None = None) -> None:
        """Append one record whose time is already split into seconds and microseconds."""
        n = len(data)
        self._fh.write(RECORD_HEADER.pack(sec, usec, n, n if wire_len is None else wire_len))
        self._fh.write(data)
        self.records += 1
        self.bytes_written += RECORD_HEADER.size + n

    def write_raw(self, records: bytes, count: int = 0) -> None:
        """Append bytes that already hold ``count`` whole records (header and data each)."""
        self._fh.write(records)
        self.records += count
        self.bytes_written += len(records)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        """Flush, and close the file when this writer opened it."""
        if self._fh.closed:
            return
        self._fh.flush()
        if self._own:
            self._fh.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
