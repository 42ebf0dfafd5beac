"""Hand-built Google QUIC client packets carrying a CHLO, for the gQUIC name tests.

Layouts as Chromium sent them (and Wireshark/tshark dissects them): the public header of
Q043 and older, the long header of Q046, and Q050's protected Initial (through
:func:`classifier.names.quic.encrypt_initial`, CRYPTO frame type 0x08).
"""

from __future__ import annotations

from classifier.names.quic import QUIC_Q050, _encode_varint, encrypt_initial

CID = bytes.fromhex("b4a1c2d3e4f50617")
HASH = bytes(range(0xA0, 0xAC))  # the 12-byte message authentication hash (unchecked)


def chlo(
    tags: list[tuple[bytes, bytes]], *, entries: int | None = None, ends: list[int] | None = None
) -> bytes:
    """A CHLO message with ``tags`` (tag, value) in the order given. ``entries`` and
    ``ends`` override the entry count and the end offsets written (to make them lie)."""
    table = b""
    values = b""
    for i, (tag, value) in enumerate(tags):
        values += value
        end = len(values) if ends is None else ends[i]
        table += tag.ljust(4, b"\x00")[:4] + end.to_bytes(4, "little")
    count = len(tags) if entries is None else entries
    return b"CHLO" + count.to_bytes(2, "little") + b"\x00\x00" + table + values


def chrome_chlo(sni: str | bytes | None, pad: int = 400) -> bytes:
    """A CHLO shaped like Chrome's inchoate one: PAD, SNI, STK, VER, CCS, ... (sorted)."""
    tags: list[tuple[bytes, bytes]] = [(b"PAD", b"-" * pad)]
    if sni is not None:
        tags.append((b"SNI", sni.encode() if isinstance(sni, str) else sni))
    tags += [
        (b"STK", bytes(range(54))),
        (b"VER", b"Q043"),
        (b"CCS", b"\x01\xe8" * 8),
        (b"PDMD", b"X509"),
        (b"ICSL", b"\x1e\x00\x00\x00"),
        (b"CFCW", b"\x00\xc0\x00\x00"),
    ]
    return chlo(tags)


def stream_frame(
    data: bytes,
    *,
    big: bool,
    stream_id: int = 1,
    id_len: int = 1,
    offset: int = 0,
    off_len: int = 0,
    data_len: int | None = -1,
) -> bytes:
    """A gQUIC STREAM frame. ``data_len`` -1: the real length, ``None``: no length field
    (data to the end of the packet), else the value written (may lie)."""
    order = "big" if big else "little"
    ftype = 0x80 | (id_len - 1) | ((off_len - 1 if off_len else 0) << 2)
    if data_len is not None:
        ftype |= 0x20
    out = (
        bytes([ftype])
        + stream_id.to_bytes(id_len, order)
        + (offset.to_bytes(off_len, order) if off_len else b"")
    )
    if data_len is not None:
        out += (len(data) if data_len == -1 else data_len).to_bytes(2, order)
    return out + data


def public_packet(
    version: str, frames: bytes, *, pn: int = 1, pn_len: int = 1, flags: int = 0x0C
) -> bytes:
    """A client packet with the public header (Q043 and older): version flag, ``flags``
    (0x0C: 8-byte connection ID as Chrome set it), packet number, hash, private flags
    before Q034, then ``frames``."""
    number = int(version[1:]) if version[1:].isdigit() else 0
    pn_bits = {1: 0x00, 2: 0x10, 4: 0x20, 6: 0x30}[pn_len]
    first = 0x01 | flags | pn_bits
    cid = CID if first & 0x08 else b""
    pn_bytes = pn.to_bytes(pn_len, "big" if number >= 39 else "little")
    private = b"\x01" if number < 34 else b""
    return bytes([first]) + cid + version.encode() + pn_bytes + HASH + private + frames


def long_packet(
    version: str, frames: bytes, *, pn: int = 1, pn_len: int = 4, cid_lens: int = 0x50
) -> bytes:
    """A Q044-Q047 long-header Initial: 4-bit connection ID lengths (``cid_lens``)."""
    dcil, scil = cid_lens >> 4, cid_lens & 0x0F
    ids = bytes(dcil + 3 if dcil else 0) + bytes(scil + 3 if scil else 0)
    return (
        bytes([0xC0 | (pn_len - 1)])
        + version.encode()
        + bytes([cid_lens])
        + ids
        + pn.to_bytes(pn_len, "big")
        + HASH
        + frames
    )


def packet(version: str, sni: str | bytes | None, *, pad_to: int = 1350) -> bytes:
    """A whole client CHLO packet of ``version`` (Q024-Q046) as Chrome sent it."""
    number = int(version[1:])
    msg = chrome_chlo(sni)
    build = long_packet if number >= 44 else public_packet
    head = len(build(version, stream_frame(msg, big=number >= 39)))
    msg = chrome_chlo(sni, pad=400 + max(0, pad_to - head))
    return build(version, stream_frame(msg, big=number >= 39))


def q050_initials(sni: str | None, *, dcid: bytes = CID, split: int = 0) -> list[bytes]:
    """Q050 client Initial(s) carrying a CHLO in CRYPTO frames (type 0x08); ``split`` > 0
    cuts the CHLO there into two Initials (packet numbers 1 and 2)."""
    msg = chrome_chlo(sni)
    parts = [(0, msg)] if not split else [(0, msg[:split]), (split, msg[split:])]
    out = []
    for pn, (offset, part) in enumerate(parts, start=1):
        frame = b"\x08" + _encode_varint(offset) + _encode_varint(len(part)) + part
        out.append(encrypt_initial(QUIC_Q050, dcid, b"", pn, frame, pad_to=1350))
    return out
