"""QUIC client Initial decryption (RFC 9001 / RFC 9369) down to the TLS ClientHello.

A QUIC client's Initial packets are encrypted with keys anyone can derive from the
Destination Connection ID of its first Initial, so the server name is readable without any
secret. This module:

* derives the client Initial keys for QUIC v1, v2 (own salt, ``quicv2`` HKDF labels and
  long-header type bits), IETF drafts 22-34, Facebook mvfst (0xfaceb00x) and Google's
  TLS-based T050/T051 (whose CRYPTO frame type is 0x08); the reserved versions
  0x?a?a?a?a that force version negotiation use the draft-29 salt and any other unknown
  version the v1 salt, as Wireshark does;
* removes header protection (AES-128-ECB) and payload protection (AES-128-GCM) with the
  ``cryptography`` package;
* walks coalesced packets in a datagram, parses PADDING / PING / ACK / CRYPTO /
  CONNECTION_CLOSE frames, and reassembles CRYPTO data by offset across packets and
  datagrams (out of order, duplicated, split: Chrome sends its ClientHello in two Initials);
* hands the reassembled CRYPTO stream to
  :func:`~classifier.names.tls.parse_handshake_client_hello`.

Google QUIC with its own crypto handshake carries a QUIC-crypto CHLO instead of a TLS
ClientHello: Q050 protects its Initials like IETF QUIC (own salt, CRYPTO frame type 0x08),
so this parser decrypts them and reads the CHLO's SNI with
:func:`~classifier.names.gquic.read_chlo` (``chlo_sni``); the older versions send the
CHLO in clear and are read by :func:`~classifier.names.gquic.parse_gquic_packet`
(here they are given up).

Nothing here raises on bad input: undecryptable or malformed packets are ignored.
:func:`encrypt_initial` builds a protected client Initial (tests and the traffic lab).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from classifier.names.gquic import read_chlo
from classifier.names.tls import ClientHelloInfo, parse_handshake_client_hello

__all__ = [
    "MAX_CRYPTO_BYTES",
    "QUIC_Q050",
    "QUIC_V1",
    "QUIC_V2",
    "InitialKeys",
    "QuicInitialParser",
    "encrypt_initial",
    "initial_keys",
    "is_long_header",
]

_log = logging.getLogger(__name__)

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
QUIC_Q050 = 0x51303530  # "Q050": Google QUIC crypto (CHLO) in protected Initials

_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D22 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_T50 = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T51 = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")
_SALT_Q50 = bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45")

#: Bytes of CRYPTO stream kept per connection while waiting for the ClientHello.
MAX_CRYPTO_BYTES = 16384
_MAX_DATAGRAM_PACKETS = 8
_MIN_SAMPLE = 16
_TAG_LEN = 16


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """Packet protection keys of one direction's Initial packets."""

    key: bytes
    iv: bytes
    hp: bytes


def _salt_for(version: int) -> bytes:
    if version == QUIC_V2:
        return _SALT_V2
    if version >> 8 == 0xFF0000:  # IETF draft-NN
        draft = version & 0xFF
        if draft <= 22:
            return _SALT_D22
        if draft <= 28:
            return _SALT_D23
        return _SALT_D29
    if version == 0xFACEB001:
        return _SALT_D22
    if version in (0xFACEB002, 0xFACEB00E):
        return _SALT_D23
    if version == 0x54303530:  # "T050"
        return _SALT_T50
    if version == 0x54303531:  # "T051"
        return _SALT_T51
    if version == QUIC_Q050:
        return _SALT_Q50
    if version & 0x0F0F0F0F == 0x0A0A0A0A:  # forced version negotiation: draft-29 rules
        return _SALT_D29
    return _SALT_V1


def _crypto_frame_type(version: int) -> int:
    # Google's "T05x" and "Q050" number CRYPTO as 0x08 (gQUIC frame types)
    return 0x08 if version >> 24 == 0x54 or version == QUIC_Q050 else 0x06


def _is_gquic_crypto(version: int) -> bool:
    """Google QUIC versions with their own (non-TLS) handshake in packets this parser
    cannot read: Q0xx except Q050 (whose Initials it decrypts)."""
    return version >> 24 == 0x51 and version != QUIC_Q050  # "Q"


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    full = b"tls13 " + label.encode("ascii")
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@lru_cache(maxsize=1024)
def initial_keys(version: int, dcid: bytes, client: bool = True) -> InitialKeys:
    """Derive the Initial packet keys for ``version`` from the client's first DCID.

    ``client`` selects the client's (default) or the server's keys. Unknown versions use the
    v1 salt. Never raises for any int/bytes input.
    """
    initial_secret = _hkdf_extract(_salt_for(version), dcid)
    secret = _hkdf_expand_label(initial_secret, "client in" if client else "server in", 32)
    prefix = "quicv2 " if version == QUIC_V2 else "quic "
    return InitialKeys(
        key=_hkdf_expand_label(secret, prefix + "key", 16),
        iv=_hkdf_expand_label(secret, prefix + "iv", 12),
        hp=_hkdf_expand_label(secret, prefix + "hp", 16),
    )


def _initial_type_bits(version: int) -> int:
    return 0b01 if version == QUIC_V2 else 0b00


def _retry_type_bits(version: int) -> int:
    return 0b00 if version == QUIC_V2 else 0b11


def is_long_header(datagram: bytes) -> bool:
    """True when the datagram starts with a QUIC long header carrying a real version."""
    return len(datagram) >= 7 and datagram[0] & 0xC0 == 0xC0 and datagram[1:5] != b"\0\0\0\0"


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """Decode a QUIC variable-length integer at ``pos``: (value, next pos) or None."""
    if pos >= len(data):
        return None
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        return None
    value = first & 0x3F
    for b in data[pos + 1 : pos + size]:
        value = (value << 8) | b
    return value, pos + size


def _encode_varint(value: int) -> bytes:
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def _hp_mask(hp_key: bytes, sample: bytes) -> bytes:
    enc = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
    return enc.update(sample) + enc.finalize()


def _nonce(iv: bytes, pn: int) -> bytes:
    return bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big"), strict=True))


def _decode_pn(truncated: int, pn_len: int, largest: int) -> int:
    """RFC 9000 Appendix A.3: full packet number from its truncated form."""
    expected = largest + 1
    win = 1 << (8 * pn_len)
    half = win // 2
    candidate = (expected & ~(win - 1)) | truncated
    if candidate <= expected - half and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + half and candidate >= win:
        return candidate - win
    return candidate


@dataclass(frozen=True, slots=True)
class _LongHeader:
    first: int
    version: int
    dcid: bytes
    scid: bytes
    ptype: int
    pn_offset: int  # for Initial/0-RTT/Handshake: offset of the packet number
    end: int  # offset just past this packet in the datagram (0 when unknown, e.g. Retry)


def _parse_long_header(data: bytes, start: int) -> _LongHeader | None:
    if len(data) - start < 7 or data[start] & 0x80 == 0:
        return None
    first = data[start]
    version = int.from_bytes(data[start + 1 : start + 5], "big")
    pos = start + 5
    dcid_len = data[pos]
    if dcid_len > 20 or pos + 1 + dcid_len >= len(data):
        return None
    dcid = data[pos + 1 : pos + 1 + dcid_len]
    pos += 1 + dcid_len
    scid_len = data[pos]
    if scid_len > 20 or pos + 1 + scid_len > len(data):
        return None
    scid = data[pos + 1 : pos + 1 + scid_len]
    pos += 1 + scid_len
    ptype = (first >> 4) & 0x03
    if version == 0 or ptype == _retry_type_bits(version):
        return _LongHeader(first, version, dcid, scid, ptype, 0, 0)
    if ptype == _initial_type_bits(version):
        tok = _varint(data, pos)
        if tok is None or tok[1] + tok[0] > len(data):
            return None
        pos = tok[1] + tok[0]
    length = _varint(data, pos)
    if length is None:
        return None
    pn_offset = length[1]
    end = pn_offset + length[0]
    if length[0] < 1 or end > len(data):
        # A truncated capture keeps the packet short: use what is there.
        end = len(data)
    return _LongHeader(first, version, dcid, scid, ptype, pn_offset, end)


def _unprotect(
    data: bytes, hdr: _LongHeader, start: int, keys: InitialKeys, largest_pn: int
) -> tuple[int, bytes] | None:
    """Remove header and payload protection: (packet number, plaintext) or None."""
    sample_at = hdr.pn_offset + 4
    if sample_at + _MIN_SAMPLE > hdr.end:
        return None
    mask = _hp_mask(keys.hp, bytes(data[sample_at : sample_at + _MIN_SAMPLE]))
    first = hdr.first ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(
        b ^ m for b, m in zip(data[hdr.pn_offset : hdr.pn_offset + pn_len], mask[1:], strict=False)
    )
    truncated = int.from_bytes(pn_bytes, "big")
    pn = _decode_pn(truncated, pn_len, largest_pn)
    header = bytes([first]) + bytes(data[start + 1 : hdr.pn_offset]) + pn_bytes
    ciphertext = bytes(data[hdr.pn_offset + pn_len : hdr.end])
    if len(ciphertext) < _TAG_LEN:
        return None
    try:
        plain = AESGCM(keys.key).decrypt(_nonce(keys.iv, pn), ciphertext, header)
    except (InvalidTag, ValueError):
        return None
    return pn, plain


def _crypto_frames(plain: bytes, crypto_type: int = 0x06) -> list[tuple[int, bytes]]:
    """(offset, data) of the CRYPTO frames in a decrypted Initial payload.

    ``crypto_type`` is the CRYPTO frame's type: 0x06 in IETF QUIC, 0x08 in Google's T05x.
    Stops quietly at the first frame type not allowed in Initial packets.
    """
    out: list[tuple[int, bytes]] = []
    pos = 0
    n = len(plain)
    while pos < n:
        ftype = plain[pos]
        if ftype == 0x00:  # PADDING: skip the whole run at once
            nxt = pos + 1
            while nxt < n and plain[nxt] == 0:
                nxt += 1
            pos = nxt
            continue
        if ftype == 0x01:  # PING
            pos += 1
            continue
        if ftype in (0x02, 0x03):  # ACK, ACK_ECN
            fields = _read_varints(plain, pos + 1, 4)
            if fields is None:
                break
            (_, _, ranges, _), pos = fields
            if ranges > 256:
                break
            skipped = _read_varints(plain, pos, 2 * ranges + (3 if ftype == 0x03 else 0))
            if skipped is None:
                break
            pos = skipped[1]
            continue
        if ftype == crypto_type:
            fields = _read_varints(plain, pos + 1, 2)
            if fields is None:
                break
            (offset, length), pos = fields
            if pos + length > n:
                break
            out.append((offset, bytes(plain[pos : pos + length])))
            pos += length
            continue
        if ftype == 0x1C:  # CONNECTION_CLOSE (transport)
            fields = _read_varints(plain, pos + 1, 3)
            if fields is None:
                break
            (_, _, reason_len), pos = fields
            pos += reason_len
            continue
        break
    return out


def _read_varints(data: bytes, pos: int, count: int) -> tuple[tuple[int, ...], int] | None:
    values: list[int] = []
    for _ in range(count):
        got = _varint(data, pos)
        if got is None:
            return None
        values.append(got[0])
        pos = got[1]
    return tuple(values), pos


class QuicInitialParser:
    """Per-connection state: decrypts client Initials and reassembles the ClientHello.

    Feed each UDP payload of the connection. ``result`` holds the parsed ClientHello once the
    CRYPTO stream has all of it; for Q050, whose CRYPTO stream holds a gQUIC CHLO instead,
    ``chlo_sni`` holds the CHLO's server name once read (``result`` stays ``None``);
    ``version`` the QUIC version of the first Initial seen; ``failed`` becomes True when
    the flow is not one this parser can read (gQUIC crypto in clear, CRYPTO data past the
    cap, a CHLO without SNI). Never raises on odd input.
    """

    def __init__(self, max_bytes: int = MAX_CRYPTO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.result: ClientHelloInfo | None = None
        self.chlo_sni: str | None = None
        self.version: int | None = None
        self.failed = False
        self._first_dcid: bytes | None = None
        self._chunks: dict[int, bytes] = {}
        self._stored = 0
        self._largest_pn = -1
        self.initials_decrypted = 0

    @property
    def done(self) -> bool:
        """True once a ClientHello (or Q050 CHLO name) was read or the connection was
        given up."""
        return self.result is not None or self.chlo_sni is not None or self.failed

    def feed(self, datagram: bytes) -> ClientHelloInfo | None:
        """Add one UDP payload; return the ClientHello once complete (else ``None``)."""
        if self.done or not is_long_header(datagram):
            return self.result
        data = bytes(datagram)
        if _is_gquic_crypto(int.from_bytes(data[1:5], "big")):
            self.failed = True
            return None
        start = 0
        for _ in range(_MAX_DATAGRAM_PACKETS):
            hdr = _parse_long_header(data, start)
            if hdr is None or hdr.end == 0:
                break
            if hdr.ptype == _initial_type_bits(hdr.version):
                self._on_initial(data, hdr, start)
                if self.done:
                    break
            if hdr.end >= len(data) or data[hdr.end] & 0x80 == 0:
                break
            start = hdr.end
        return self.result

    def _on_initial(self, data: bytes, hdr: _LongHeader, start: int) -> None:
        candidates = [hdr.dcid]
        if self._first_dcid is not None and self._first_dcid != hdr.dcid:
            candidates.append(self._first_dcid)
        for dcid in candidates:
            got = _unprotect(data, hdr, start, initial_keys(hdr.version, dcid), self._largest_pn)
            if got is None:
                continue
            pn, plain = got
            if self._first_dcid is None:
                self._first_dcid = dcid
                self.version = hdr.version
            self._largest_pn = max(self._largest_pn, pn)
            self.initials_decrypted += 1
            for offset, chunk in _crypto_frames(plain, _crypto_frame_type(hdr.version)):
                self._add_crypto(offset, chunk)
            self._try_parse()
            return

    def _add_crypto(self, offset: int, chunk: bytes) -> None:
        if not chunk or offset + len(chunk) > self.max_bytes:
            if chunk and offset < self.max_bytes:
                self.failed = True
            return
        old = self._chunks.get(offset)
        if old is not None and len(old) >= len(chunk):
            return
        self._stored += len(chunk) - (len(old) if old else 0)
        if self._stored > 2 * self.max_bytes:
            self.failed = True
            return
        self._chunks[offset] = chunk

    def _try_parse(self) -> None:
        stream = bytearray()
        for offset in sorted(self._chunks):
            chunk = self._chunks[offset]
            if offset > len(stream):
                break
            if offset + len(chunk) > len(stream):
                stream += chunk[len(stream) - offset :]
        if len(stream) < 4:
            return
        if self.version == QUIC_Q050 and stream[:4] == b"CHLO":
            settled, sni = read_chlo(bytes(stream))
            if sni is not None:
                self.chlo_sni = sni
            elif settled or len(stream) >= self.max_bytes:
                self.failed = True
            return
        if stream[0] != 1:
            self.failed = True
            return
        need = 4 + int.from_bytes(stream[1:4], "big")
        if need > self.max_bytes:
            self.failed = True
            return
        if len(stream) >= need:
            self.result = parse_handshake_client_hello(bytes(stream[:need]))
            if self.result is None:
                self.failed = True


def encrypt_initial(
    version: int,
    dcid: bytes,
    scid: bytes,
    pn: int,
    payload: bytes,
    *,
    pn_len: int = 4,
    token: bytes = b"",
    pad_to: int = 0,
    key_dcid: bytes | None = None,
) -> bytes:
    """Build a protected client Initial packet (header + AEAD + header protection).

    ``payload`` is the plaintext frames; it is padded with PADDING frames so the packet is
    at least ``pad_to`` bytes long and the header-protection sample exists. Keys come from
    ``key_dcid`` when given (a client's later Initials keep the keys of its first DCID),
    else from ``dcid``. Raises
    ``ValueError`` on out-of-range arguments (pn_len not 1-4, connection IDs over 20 bytes).
    """
    if not 1 <= pn_len <= 4 or len(dcid) > 20 or len(scid) > 20:
        raise ValueError("pn_len must be 1-4 and connection IDs at most 20 bytes")
    keys = initial_keys(version, dcid if key_dcid is None else key_dcid)
    first = 0xC0 | (_initial_type_bits(version) << 4) | (pn_len - 1)
    head = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + _encode_varint(len(token))
        + token
    )
    # The sample starts 4 bytes after the packet number: make sure it exists.
    min_payload = max(0, 4 - pn_len + _MIN_SAMPLE - _TAG_LEN)
    body = bytes(payload) + b"\x00" * max(0, min_payload - len(payload))
    # Length field size depends on the final length: use the 2-byte form as RFC 9001 A.2.
    length_len = 2
    total = len(head) + length_len + pn_len + len(body) + _TAG_LEN
    if total < pad_to:
        body += b"\x00" * (pad_to - total)
    length = pn_len + len(body) + _TAG_LEN
    if length >= 1 << 14:
        raise ValueError("Initial payload too large")
    pn_field = (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    header = head + (length | 0x4000).to_bytes(2, "big") + pn_field
    sealed = AESGCM(keys.key).encrypt(_nonce(keys.iv, pn), body, header)
    packet = bytearray(header + sealed)
    pn_offset = len(header) - pn_len
    mask = _hp_mask(keys.hp, bytes(packet[pn_offset + 4 : pn_offset + 4 + _MIN_SAMPLE]))
    packet[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        packet[pn_offset + i] ^= mask[1 + i]
    return bytes(packet)
