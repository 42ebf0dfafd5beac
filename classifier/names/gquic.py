"""Google QUIC (gQUIC) client hellos: the server name of a CHLO message.

Google's own QUIC versions (Q024 ... Q046, Q050) do not use TLS: the client opens with a
QUIC-crypto ``CHLO`` message, a tag/value map whose ``SNI`` tag holds the server name in
clear. Up to Q046 the CHLO travels unencrypted (a 12-byte hash instead of a tag) in a
STREAM frame on stream 1 of the client's first packets:

* Q043 and older: the *public header* (flags byte with the version bit 0x01, an 8-byte
  connection ID when bit 0x08 is set, the version ``Q0xx``, a 1/2/4/6-byte packet number
  by bits 0x30), the message authentication hash, a private flags byte before Q034;
* Q044-Q047: an IETF-style long header (bit 0x80; ``Q04x``; one byte of two 4-bit
  connection ID lengths, each ``n+3`` when not 0; the packet number length in the low two
  bits of the first byte), then the hash.

STREAM frame fields (stream ID, offset, data length) are little-endian before Q039,
big-endian from Q039 on; the CHLO itself is always little-endian: ``CHLO``, the number of
entries (uint16), 2 bytes of padding, then per entry its tag and the end offset of its
value (uint32), then the values back to back.

Q050 protects its Initial packets like IETF QUIC (its own salt) and carries the CHLO in
CRYPTO frames: :mod:`classifier.names.quic` decrypts those and calls :func:`read_chlo`
on the reassembled stream. Q048/Q049 (short-lived experiments with CRYPTO frames in clear)
and gQUIC packets whose first frame is not the CHLO's STREAM frame (ACKs in a second
CHLO packet) give no name here.

Nothing here raises on bad input; :mod:`classifier.names.extract_fast` has a compiled
twin of :func:`parse_gquic_packet` that must give the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_CHLO_TAGS",
    "GQuicHello",
    "gquic_version_number",
    "parse_gquic_packet",
    "read_chlo",
]

#: Chromium refuses handshake messages with more entries (kMaxEntries).
MAX_CHLO_TAGS = 128
_HASH_LEN = 12  # FNV-1a-128 truncated: the null "encryption" of gQUIC handshake packets
_STREAM_CRYPTO = 1
_PN_LENS = (1, 2, 4, 6)
_SNI_TAG = b"SNI\x00"


@dataclass(frozen=True, slots=True)
class GQuicHello:
    """A client gQUIC packet: its version (``0x51303436`` for Q046) and the CHLO's SNI
    (``None`` when the packet holds no readable CHLO or the CHLO no SNI)."""

    version: int
    sni: str | None


def gquic_version_number(version: bytes) -> int:
    """The number of a gQUIC version tag (``b"Q046"`` -> 46), -1 when it is not ``Q0dd``."""
    if len(version) != 4 or version[0] != 0x51 or version[1] != 0x30:
        return -1
    d1, d2 = version[2] - 0x30, version[3] - 0x30
    if not (0 <= d1 <= 9 and 0 <= d2 <= 9):
        return -1
    return 10 * d1 + d2


def read_chlo(msg: bytes) -> tuple[bool, str | None]:
    """Read the SNI of a CHLO message that starts at ``msg[0]``: ``(settled, sni)``.

    ``settled`` is False while more bytes of the message could still bring the name (the
    tag table or the SNI value is cut short); True once the answer is final: the name, or
    ``None`` for a message that is not a CHLO, is malformed (more than
    :data:`MAX_CHLO_TAGS` entries, end offsets going back), has no SNI tag, or an empty one.
    The name is decoded as TLS names are (UTF-8, bad bytes replaced).
    """
    head = bytes(msg[:4])
    if head != b"CHLO"[: len(head)]:
        return True, None
    if len(msg) < 8:
        return False, None
    entries = msg[4] | (msg[5] << 8)
    if entries > MAX_CHLO_TAGS:
        return True, None
    base = 8 + 8 * entries
    prev = 0
    for i in range(entries):
        e = 8 + 8 * i
        if e + 8 > len(msg):
            return False, None
        end = int.from_bytes(msg[e + 4 : e + 8], "little")
        if end < prev:
            return True, None
        if msg[e : e + 4] == _SNI_TAG:
            if end == prev:
                return True, None
            if base + end > len(msg):
                return False, None
            return True, bytes(msg[base + prev : base + end]).decode("utf-8", errors="replace")
        prev = end
    return True, None


def _uint(data: bytes, pos: int, size: int, big: bool) -> int:
    return int.from_bytes(data[pos : pos + size], "big" if big else "little")


def parse_gquic_packet(payload: bytes) -> GQuicHello | None:
    """The CHLO server name of one client gQUIC packet (Q043 and older public header,
    Q044-Q047 long header), or ``None`` when ``payload`` is not such a packet.

    A gQUIC packet whose first frame is not a STREAM frame on stream 1 starting with a
    CHLO (or whose SNI lies past the captured bytes) gives ``GQuicHello(version, None)``.
    A STREAM frame's data length longer than the packet is cut to the packet (a capture
    with a snap length keeps what it has). Never raises.
    """
    data = payload
    n = len(data)
    if n < 1:
        return None
    first = data[0]
    if first & 0x80:  # long header, Q044-Q047
        if n < 6:
            return None
        number = gquic_version_number(bytes(data[1:5]))
        if not 44 <= number <= 47:
            return None
        vat = 1
        lens = data[5]
        dcil, scil = lens >> 4, lens & 0x0F
        pos = 6 + (dcil + 3 if dcil else 0) + (scil + 3 if scil else 0) + (first & 0x03) + 1
    else:  # public header, Q043 and older: a client packet with its version
        if first & 0x03 != 0x01:  # version flag set, public reset flag clear
            return None
        cid = 8 if first & 0x08 else 0
        if n < 5 + cid:
            return None
        vat = 1 + cid
        number = gquic_version_number(bytes(data[vat : vat + 4]))
        if not 0 <= number <= 43:
            return None
        pos = 5 + cid + _PN_LENS[(first >> 4) & 0x03]
    version = int.from_bytes(data[vat : vat + 4], "big")
    pos += _HASH_LEN + (1 if number < 34 else 0)  # private flags byte before Q034
    none = GQuicHello(version, None)
    if pos >= n:
        return none
    ftype = data[pos]
    if ftype & 0x80 == 0:  # not a STREAM frame
        return none
    big = number >= 39
    id_len = (ftype & 0x03) + 1
    off_len = (ftype >> 2) & 0x07
    off_len = off_len + 1 if off_len else 0
    pos += 1
    if pos + id_len + off_len > n:
        return none
    if _uint(data, pos, id_len, big) != _STREAM_CRYPTO:
        return none
    pos += id_len + off_len
    end = n
    if ftype & 0x20:  # data length present
        if pos + 2 > n:
            return none
        end = min(n, pos + 2 + _uint(data, pos, 2, big))
        pos += 2
    _, sni = read_chlo(bytes(data[pos:end]))
    return GQuicHello(version, sni)
