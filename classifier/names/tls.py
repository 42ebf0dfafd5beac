"""TLS ClientHello parsing and a small TCP reassembler for the client's first bytes.

Only what travels in clear is read: the server name (SNI, extension 0), the ALPN list
(extension 16), the cipher suites and the extension types in the order the client sent them.
Every length field is checked against the bytes actually present: a short, damaged or
foreign byte string gives ``None``, never an exception.

A ClientHello with post-quantum key shares is ~1.8 KB and usually spans two or more TCP
segments. :class:`HelloReassembler` collects one direction's payloads by TCP sequence number
(out of order, retransmitted and overlapping segments are fine), finds the start of the TLS
handshake record and parses the hello as soon as all its bytes are there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = [
    "ClientHelloInfo",
    "HelloReassembler",
    "build_client_hello",
    "CONTENT_HANDSHAKE",
    "EXT_ALPN",
    "EXT_SERVER_NAME",
    "HS_CLIENT_HELLO",
    "MAX_HELLO_BYTES",
    "MAX_RECORD_BYTES",
    "parse_client_hello",
    "parse_handshake_client_hello",
]

_log = logging.getLogger(__name__)

#: Bytes of one direction kept while waiting for a complete ClientHello.
MAX_HELLO_BYTES = 16384
#: Longest TLS record length read as a handshake record (2^14 plus expansion room).
MAX_RECORD_BYTES = 18432
#: Segments kept per direction (bounds work on floods of tiny segments).
_MAX_SEGMENTS = 64
#: Segments seen without the start of a ClientHello before the direction is given up.
_MAX_SEGMENTS_NO_START = 8

CONTENT_HANDSHAKE = 22
HS_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
_SEQ_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class ClientHelloInfo:
    """What a ClientHello shows in clear.

    ``sni`` is the first host_name entry of the server_name extension (``None`` when absent),
    ``alpn`` the protocols offered in order, ``legacy_version`` the version field of the hello
    body, ``supported_versions`` the versions of extension 43 (GREASE values included, as
    sent), ``cipher_suites`` and ``extensions`` the code points in the order sent.
    """

    sni: str | None
    alpn: tuple[str, ...]
    legacy_version: int
    supported_versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]


class _Reader:
    """Bounds-checked cursor over bytes; every read returns None when bytes run out."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else min(end, len(data))

    @property
    def left(self) -> int:
        return self._end - self._pos

    def uint(self, size: int) -> int | None:
        if self.left < size:
            return None
        value = int.from_bytes(self._data[self._pos : self._pos + size], "big")
        self._pos += size
        return value

    def take(self, size: int) -> bytes | None:
        if size < 0 or self.left < size:
            return None
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def vector(self, len_size: int) -> bytes | None:
        """Read a length-prefixed vector (length of ``len_size`` bytes)."""
        size = self.uint(len_size)
        if size is None:
            return None
        return self.take(size)


def _decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _parse_sni(data: bytes) -> str | None:
    r = _Reader(data)
    names = r.vector(2)
    if names is None:
        return None
    nr = _Reader(names)
    while nr.left >= 3:
        name_type = nr.uint(1)
        host = nr.vector(2)
        if host is None:
            return None
        if name_type == 0 and host:
            return _decode_name(host)
    return None


def _parse_alpn(data: bytes) -> tuple[str, ...]:
    r = _Reader(data)
    block = r.vector(2)
    if block is None:
        return ()
    br = _Reader(block)
    out: list[str] = []
    while br.left > 0:
        proto = br.vector(1)
        if proto is None:
            break
        out.append(_decode_name(proto))
    return tuple(out)


def _parse_supported_versions(data: bytes) -> tuple[int, ...]:
    r = _Reader(data)
    block = r.vector(1)
    if block is None:
        return ()
    br = _Reader(block)
    out: list[int] = []
    while br.left >= 2:
        v = br.uint(2)
        if v is not None:
            out.append(v)
    return tuple(out)


def _u16_list(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2))


def _parse_hello_body(body: bytes) -> ClientHelloInfo | None:
    r = _Reader(body)
    legacy_version = r.uint(2)
    if legacy_version is None or legacy_version >> 8 != 3:
        return None
    if r.take(32) is None:  # random
        return None
    session_id = r.vector(1)
    suites = r.vector(2)
    compression = r.vector(1)
    if session_id is None or suites is None or compression is None or len(session_id) > 32:
        return None
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    ext_types: list[int] = []
    if r.left >= 2:  # extensions are optional (SSLv3-style hello)
        ext_block = r.vector(2)
        if ext_block is None:
            return None
        er = _Reader(ext_block)
        while er.left > 0:
            ext_type = er.uint(2)
            ext_data = er.vector(2)
            if ext_type is None or ext_data is None:
                return None
            ext_types.append(ext_type)
            if ext_type == EXT_SERVER_NAME and sni is None:
                sni = _parse_sni(ext_data)
            elif ext_type == EXT_ALPN and not alpn:
                alpn = _parse_alpn(ext_data)
            elif ext_type == _EXT_SUPPORTED_VERSIONS and not versions:
                versions = _parse_supported_versions(ext_data)
    return ClientHelloInfo(
        sni=sni,
        alpn=alpn,
        legacy_version=legacy_version,
        supported_versions=versions,
        cipher_suites=_u16_list(suites),
        extensions=tuple(ext_types),
    )


def parse_handshake_client_hello(data: bytes) -> ClientHelloInfo | None:
    """Parse a ClientHello handshake message (type, 3-byte length, body), as in a QUIC CRYPTO
    stream. Bytes after the message are ignored. Returns ``None`` on anything else; never
    raises."""
    if len(data) < 4 or data[0] != HS_CLIENT_HELLO:
        return None
    size = int.from_bytes(data[1:4], "big")
    if len(data) < 4 + size:
        return None
    try:
        return _parse_hello_body(bytes(data[4 : 4 + size]))
    except (ValueError, IndexError):  # defensive: the reader should make this unreachable
        _log.debug("malformed ClientHello body", exc_info=True)
        return None


def _handshake_bytes(stream: bytes) -> tuple[bytes, bool]:
    """Concatenate the payloads of the leading TLS handshake records in ``stream``.

    Returns (handshake bytes, ok). ``ok`` is False when the stream is not TLS handshake
    records at all (it will never become a ClientHello).
    """
    out = bytearray()
    pos = 0
    while pos + 5 <= len(stream):
        content, major, minor = stream[pos], stream[pos + 1], stream[pos + 2]
        if content != CONTENT_HANDSHAKE or major != 3 or minor > 4:
            return bytes(out), bool(out)
        size = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if size == 0 or size > MAX_RECORD_BYTES:
            return bytes(out), bool(out)
        out += stream[pos + 5 : pos + 5 + size]
        pos += 5 + size
    return bytes(out), True


def parse_client_hello(data: bytes) -> ClientHelloInfo | None:
    """Parse a ClientHello from the start of a TLS byte stream (record layer included).

    The hello may span several handshake records. Returns ``None`` when the bytes are not a
    complete, well-formed ClientHello (truncated, other content, garbage); never raises.
    """
    hs, ok = _handshake_bytes(bytes(data))
    if not ok:
        return None
    return parse_handshake_client_hello(hs)


def _looks_like_hello_start(payload: bytes) -> bool:
    return (
        len(payload) >= 6
        and payload[0] == CONTENT_HANDSHAKE
        and payload[1] == 3
        and payload[2] <= 4
        and payload[5] == HS_CLIENT_HELLO
    )


def _looks_like_other_tls(payload: bytes) -> bool:
    """A TLS record header that does not start a ClientHello (ServerHello, app data...)."""
    return (
        len(payload) >= 6
        and payload[0] in (20, 21, 22, 23)
        and payload[1] == 3
        and payload[2] <= 4
        and not _looks_like_hello_start(payload)
    )


class HelloReassembler:
    """Collects one TCP direction's payloads until a ClientHello can be parsed.

    Feed every payload of that direction with its TCP sequence number. ``result`` is set
    once a complete hello has been parsed; ``failed`` once the stream clearly is not a TLS
    ClientHello or the byte/segment cap was reached. Never raises on odd input.
    """

    def __init__(self, max_bytes: int = MAX_HELLO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.result: ClientHelloInfo | None = None
        self.failed = False
        self._base: int | None = None
        self._segments: dict[int, bytes] = {}
        self._stored = 0
        self._start: int | None = None

    @property
    def done(self) -> bool:
        """True once a hello was parsed or the direction was given up."""
        return self.result is not None or self.failed

    def _rel(self, seq: int) -> int:
        """Sequence number relative to the first one seen, in (-2**31, 2**31]."""
        assert self._base is not None
        d = (seq - self._base) % _SEQ_MOD
        return d - _SEQ_MOD if d > _SEQ_MOD // 2 else d

    def feed(self, payload: bytes, seq: int) -> ClientHelloInfo | None:
        """Add one segment; return the parsed hello once complete (else ``None``)."""
        if self.done or not payload:
            return self.result
        if self._base is None:
            self._base = seq % _SEQ_MOD
        rel = self._rel(seq)
        old = self._segments.get(rel)
        if old is not None and len(old) >= len(payload):
            return None  # plain retransmission
        if len(self._segments) >= _MAX_SEGMENTS or self._stored + len(payload) > self.max_bytes:
            self.failed = True
            return None
        self._segments[rel] = bytes(payload)
        self._stored += len(payload) - (len(old) if old else 0)
        if _looks_like_hello_start(payload) and (self._start is None or rel < self._start):
            self._start = rel
        if self._start is None:
            # The record header may be cut over tiny segments (DPI evasion splits the first
            # bytes): look at the contiguous bytes from the lowest sequence number too.
            first = min(self._segments)
            if _looks_like_hello_start(self._contiguous(first)[:6]):
                self._start = first
        if self._start is None:
            if _looks_like_other_tls(payload) or len(self._segments) >= _MAX_SEGMENTS_NO_START:
                self.failed = True  # a server's TLS flight, or a stream that is not TLS
            return None
        stream = self._contiguous(self._start)
        hs, ok = _handshake_bytes(stream)
        if not ok:
            self.failed = True
            return None
        if len(hs) >= 4:
            if hs[0] != HS_CLIENT_HELLO:
                self.failed = True
                return None
            need = 4 + int.from_bytes(hs[1:4], "big")
            if need > self.max_bytes:
                self.failed = True
                return None
            if len(hs) >= need:
                self.result = parse_handshake_client_hello(hs)
                if self.result is None:
                    self.failed = True
        return self.result

    def _contiguous(self, start: int) -> bytes:
        out = bytearray()
        end = start
        for rel in sorted(self._segments):
            data = self._segments[rel]
            seg_end = rel + len(data)
            if seg_end <= end:
                continue
            if rel > end:
                break  # gap: wait for the missing bytes
            out += data[end - rel :]
            end = seg_end
        return bytes(out)


def _ext(ext_type: int, body: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def build_client_hello(
    sni: str | None,
    alpn: tuple[str, ...] = (),
    *,
    key_share_len: int = 32,
    extra_extensions: tuple[tuple[int, bytes], ...] = (),
    record: bool = True,
) -> bytes:
    """Build a syntactically valid TLS 1.3 ClientHello (for tests and synthetic traffic).

    ``key_share_len`` sizes the key share (1216 for an X25519MLKEM768 hybrid share makes a
    ~1.5 KB hello); ``extra_extensions`` are appended in the given order. ``record``
    wraps the handshake message in one TLS record (as on TCP); without it the bare handshake
    message is returned (as in a QUIC CRYPTO stream). Raises ``ValueError`` if a field is too
    long for its length prefix.
    """
    exts = b""
    if sni is not None:
        host = sni.encode("utf-8")
        entry = b"\x00" + len(host).to_bytes(2, "big") + host
        exts += _ext(EXT_SERVER_NAME, len(entry).to_bytes(2, "big") + entry)
    if alpn:
        protos = b"".join(len(p.encode()).to_bytes(1, "big") + p.encode() for p in alpn)
        exts += _ext(EXT_ALPN, len(protos).to_bytes(2, "big") + protos)
    exts += _ext(_EXT_SUPPORTED_VERSIONS, b"\x04\x03\x04\x03\x03")
    share = (0x11EC).to_bytes(2, "big") + key_share_len.to_bytes(2, "big") + b"\x5a" * key_share_len
    exts += _ext(51, len(share).to_bytes(2, "big") + share)
    for ext_type, body in extra_extensions:
        exts += _ext(ext_type, body)
    suites = bytes.fromhex("130113021303c02bc02f")
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + b"\x20"
        + bytes(range(32, 64))
        + len(suites).to_bytes(2, "big")
        + suites
        + b"\x01\x00"
        + len(exts).to_bytes(2, "big")
        + exts
    )
    msg = bytes([HS_CLIENT_HELLO]) + len(body).to_bytes(3, "big") + body
    if not record:
        return msg
    return bytes([CONTENT_HANDSHAKE, 3, 1]) + len(msg).to_bytes(2, "big") + msg
