"""One entry point for reading capture files: :func:`open_capture`.

The default backend, ``"builtin"`` (``"dpkt"`` and ``"native"`` are older names of it),
walks pcap/pcapng records itself (:mod:`~classifier.capture.pcap`,
:mod:`~classifier.capture.pcapng`) and decodes frames with :mod:`~classifier.capture.decode`.
The ``"tshark"`` backend (alias ``"pyshark"``) runs ``tshark -T fields`` and yields the same
:class:`Packet` stream; it exists to cross-check the built-in one and to read formats only
Wireshark knows.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from collections.abc import Iterator
from typing import IO, Any, cast

from classifier.capture.decode import decode_frame
from classifier.capture.packet import Packet
from classifier.capture.pcap import PCAP_MAGICS, iter_pcap
from classifier.capture.pcapng import PCAPNG_MAGIC, iter_pcapng
from classifier.capture.stats import ReadStats
from classifier.errors import CaptureError

__all__ = ["ReadStats", "open_capture", "BACKENDS", "BUILTIN", "is_builtin", "backend_name"]

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The built-in reader's backend name (the compiled fast engine reads only through it)."""
_BUILTIN_ALIASES = frozenset((BUILTIN, "dpkt", "native"))  # older names, still accepted
_TSHARK = frozenset(("tshark", "pyshark"))
BACKENDS: frozenset[str] = _BUILTIN_ALIASES | _TSHARK
"""Every accepted backend name, the older aliases of ``builtin`` included."""


def is_builtin(backend: str) -> bool:
    """``backend`` names the built-in reader (``builtin``, or its older ``dpkt``/``native``)."""
    return backend in _BUILTIN_ALIASES


def backend_name(backend: str) -> str:
    """``backend`` with an older alias of the built-in reader replaced by ``builtin``;
    other names as they are."""
    return BUILTIN if is_builtin(backend) else backend


_GZIP_MAGIC = b"\x1f\x8b"
_BUFFER = 1 << 20


def _check_file(path: str) -> None:
    """Raise CaptureError unless ``path`` is an existing, readable, non-empty file."""
    if not os.path.exists(path):
        raise CaptureError(path, "no such file; check the path")
    if os.path.isdir(path):
        raise CaptureError(path, "is a directory, not a capture file; pass a .pcap or .pcapng file")
    if not os.path.isfile(path):
        raise CaptureError(path, "is not a regular file; pass a .pcap or .pcapng file")
    if os.path.getsize(path) == 0:
        raise CaptureError(path, "empty file (0 bytes); nothing to read")
    if not os.access(path, os.R_OK):
        raise CaptureError(path, "permission denied; make the file readable")


class _GzipStream(io.RawIOBase):
    """The decompressed bytes of a gzip file (one member or several), seekable, that ends
    where the compressed data ends: a file cut short reads to the cut (``cut_at`` is then
    the decompressed offset reached) where :mod:`gzip` raises EOFError and gives nothing of
    the last block it was decompressing. Damaged compressed data raises zlib.error."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115  closed in close()
        self.cut_at: int | None = None
        self._rewind()

    def _rewind(self) -> None:
        self._file.seek(0)
        self._z = zlib.decompressobj(wbits=31)
        self._input = b""  # compressed bytes not yet given to the decompressor
        self._output = b""  # decompressed bytes not yet read
        self._pos = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        while not self._output and not self._ended:
            self._decompress()
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._output))
        view[:n] = self._output[:n]
        self._output = self._output[n:]
        self._pos += n
        return n

    def _decompress(self) -> None:
        if not self._input:
            self._input = self._file.read(_BUFFER)
            if not self._input:
                self._ended = True
                if not self._z.eof and self._z.unused_data == b"":
                    self.cut_at = self._pos  # inside a member: the file was cut short
                return
        if self._z.eof:  # the member ended; another may follow (after zero padding)
            self._input = self._input.lstrip(b"\0")
            if not self._input:
                return
            self._z = zlib.decompressobj(wbits=31)
        self._output = self._z.decompress(self._input, _BUFFER)
        self._input = self._z.unused_data if self._z.eof else self._z.unconsumed_tail

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._pos + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < 0:
            raise OSError(f"gzip stream: cannot seek to {offset} (whence {whence})")
        if target < self._pos:
            self._rewind()
        while self._pos < target and not (self._ended and not self._output):
            if not self._output:
                self._decompress()
                continue
            n = min(target - self._pos, len(self._output))
            self._output = self._output[n:]
            self._pos += n
        return self._pos

    def close(self) -> None:
        self._file.close()
        super().close()


def _open(path: str, compressed: bool) -> IO[bytes]:
    if compressed:
        return cast(IO[bytes], io.BufferedReader(_GzipStream(path), _BUFFER))
    return open(path, "rb", buffering=_BUFFER)


def _sniff(path: str) -> tuple[str, bool]:
    """Return (``"pcap"`` or ``"pcapng"``, gzip-compressed?) from the file's magic bytes.

    Raises CaptureError when the file is neither (nor a gzip of either).
    """
    try:
        with open(path, "rb") as raw:
            magic = raw.read(4)
        compressed = magic[:2] == _GZIP_MAGIC
        if compressed:
            with gzip.open(path, "rb") as gz:
                magic = gz.read(4)
            if not magic:
                raise CaptureError(path, "empty gzip stream; nothing to read")
    except CaptureError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise CaptureError(path, f"cannot read: {exc}") from None
    if magic in PCAP_MAGICS:
        return "pcap", compressed
    if magic == PCAPNG_MAGIC:
        return "pcapng", compressed
    shown = magic.hex() if magic else "nothing"
    if magic and all(32 <= b < 127 or b in b"\t\r\n" for b in magic):
        raise CaptureError(
            path,
            f"not a pcap or pcapng capture but text (starts with {magic.decode()!r}); a "
            "packet trace (netpkt text, JSON packet list, per-session CSV) is read by "
            "`shortflow dataset import-trace FILE --out DIR`, which writes pcaps to classify",
            0,
        )
    raise CaptureError(
        path,
        f"not a pcap or pcapng capture (starts with {shown}); save or convert it as pcap or "
        "pcapng, e.g. `editcap -F pcapng IN OUT`",
        0,
    )


def _native(
    path: str, fmt: str, compressed: bool, skip_bad: bool, stats: ReadStats
) -> Iterator[Packet]:
    walker = iter_pcap if fmt == "pcap" else iter_pcapng
    skipped = stats.skipped
    notes = stats.noted
    f = _open(path, compressed)
    try:
        for linktype, ts, wire_len, data in walker(f, path, stats, skip_bad):
            found = decode_frame(linktype, data, ts, wire_len, notes)
            if isinstance(found, str):
                skipped[found] = skipped.get(found, 0) + 1
            else:
                stats.packets += 1
                yield found
    except (OSError, EOFError, zlib.error) as exc:
        raise CaptureError(
            path, f"read failed ({exc}); the file or its compression is damaged", stats.bytes_read
        ) from None
    finally:
        cut_at = getattr(getattr(f, "raw", None), "cut_at", None)
        f.close()
    if cut_at is not None and stats.truncated_at is None:  # cut between two records
        stats.truncated_at = cut_at
        logger.warning(
            "%s: compressed capture cut short at byte %d (of the decompressed "
            "capture); read up to there",
            path,
            cut_at,
        )


def open_capture(
    path: str | os.PathLike[str],
    backend: str = BUILTIN,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Packet]:
    """Open a pcap or pcapng file (optionally gzip-compressed) and iterate its TCP/UDP packets.

    The file is checked at once (exists, is a file, not empty, has a pcap/pcapng magic);
    the records are read lazily while the returned iterator is consumed, and ``stats``
    (when given) is filled in along the way.

    Raises CaptureError (one line: file, byte offset when known, what to do) for a missing
    file, a directory, an empty file, a file that is not a capture, an unknown backend, and,
    while iterating, for a damaged record (unless ``skip_bad``) or a capture whose only
    link type is unknown. A capture cut short inside its last record is not an error:
    ``stats.truncated_at`` is set and a warning is logged; so is a gzip-compressed capture
    whose compressed data stops before its end (read up to the cut).

    ``backend="tshark"`` (or ``"pyshark"``) decodes with a tshark subprocess instead; it
    ignores ``skip_bad`` (tshark stops at damage on its own), leaves ``stats.linktypes``
    empty and cannot give ``truncated_at``.
    """
    name = os.fspath(path)
    if backend not in BACKENDS:
        raise CaptureError(
            name,
            f"unknown capture backend {backend!r}; use one of {sorted((BUILTIN, *_TSHARK))}",
        )
    st = stats if stats is not None else ReadStats()
    _check_file(name)
    if backend in _TSHARK:
        from classifier.capture.tshark import iter_tshark

        st.format = "tshark"
        return iter_tshark(name, st)
    fmt, compressed = _sniff(name)
    st.format = fmt + ("+gzip" if compressed else "")
    return _native(name, fmt, compressed, skip_bad, st)
