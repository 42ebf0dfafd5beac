"""Build small hand-made captures (pcap / pcapng bytes) for the capture tests.

Every header is packed by hand with :mod:`struct` so that tests can also build broken
ones (wrong lengths, cut-short records, unknown link types).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from classifier.capture.pcap import MAGIC_NS, MAGIC_US

__all__ = [
    "tcp",
    "udp",
    "ipv4",
    "ipv6",
    "v6_ext",
    "ether",
    "sll",
    "sll2",
    "null",
    "pcap_file",
    "pcapng_shb",
    "pcapng_idb",
    "pcapng_epb",
    "pcapng_spb",
    "pcapng_opb",
    "pcapng_block",
    "write",
]

SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def tcp(
    sport: int,
    dport: int,
    payload: bytes = b"",
    seq: int = 1000,
    flags: int = PSH | ACK,
    doff: int = 5,
    options: bytes = b"",
) -> bytes:
    """A TCP header (data offset ``doff`` words, options padded by the caller) + payload."""
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, (doff << 4), flags, 65535, 0, 0)
    return head + options + payload


def udp(sport: int, dport: int, payload: bytes = b"", length: int | None = None) -> bytes:
    size = 8 + len(payload) if length is None else length
    return struct.pack("!HHHH", sport, dport, size, 0) + payload


def ipv4(
    payload: bytes,
    proto: int = 6,
    src: str = "10.77.0.1",
    dst: str = "10.77.0.2",
    total_len: int | None = None,
    ihl: int = 5,
    frag_offset: int = 0,
    more_fragments: bool = False,
    options: bytes = b"",
) -> bytes:
    size = ihl * 4 + len(payload) if total_len is None else total_len
    frag = (0x2000 if more_fragments else 0) | (frag_offset & 0x1FFF)
    head = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | (ihl & 0x0F),
        0,
        size,
        1,
        frag,
        64,
        proto,
        0,
        socket.inet_pton(socket.AF_INET, src),
        socket.inet_pton(socket.AF_INET, dst),
    )
    return head + options + payload


def v6_ext(kind: int, nxt: int, body_len: int = 6, frag_word: int = 0) -> bytes:
    """One IPv6 extension header: hop-by-hop (0), routing (43), dest opts (60): ``body_len``
    bytes after the 2-byte head, a multiple of 8 minus 2; fragment (44) with
    ``frag_word`` (offset << 3 | M); AH (51): ``body_len`` bytes after the 2-byte head."""
    if kind == 44:
        return struct.pack("!BBHI", nxt, 0, frag_word, 0x1234)
    if kind == 51:
        total = 2 + body_len
        return struct.pack("!BB", nxt, total // 4 - 2) + b"\x00" * body_len
    total = 2 + body_len
    return struct.pack("!BB", nxt, total // 8 - 1) + b"\x00" * body_len


def ipv6(
    payload: bytes,
    nxt: int = 6,
    src: str = "fd77::1",
    dst: str = "fd77::2",
    plen: int | None = None,
    ext: bytes = b"",
) -> bytes:
    size = len(ext) + len(payload) if plen is None else plen
    head = struct.pack(
        "!IHBB16s16s",
        0x60000000,
        size,
        nxt,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return head + ext + payload


def ether(payload: bytes, ethertype: int = 0x0800, vlans: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet II frame; ``vlans`` is a list of (tag protocol id, VLAN id), outermost first."""
    head = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for tpid, vid in vlans:
        head += struct.pack("!H", tpid)
        head += struct.pack("!H", vid & 0x0FFF)
    head += struct.pack("!H", ethertype)
    return head + payload


def sll(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", protocol) + payload


def sll2(payload: bytes, protocol: int = 0x0800) -> bytes:
    return (
        struct.pack("!HHIHBB8s", protocol, 0, 2, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00")
        + payload
    )


def null(payload: bytes, family: int, order: str = "<") -> bytes:
    return struct.pack(order + "I", family) + payload


Record = tuple[int, int, bytes] | tuple[int, int, bytes, int]


def pcap_file(
    records: Iterable[Record],
    linktype: int = 1,
    nano: bool = False,
    order: str = "<",
    snaplen: int = 65535,
) -> bytes:
    """A classic pcap: ``records`` are (sec, usec-or-nsec, data[, orig_len]).

    Any byte order and resolution, for the reader's tests; the repo's own files are written
    by :mod:`classifier.capture.pcap_writer` (tests/capture/test_pcap_writer.py checks that
    both give the same bytes for little-endian microseconds)."""
    magic = MAGIC_NS if nano else MAGIC_US
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data = rec[0], rec[1], rec[2]
        orig = rec[3] if len(rec) > 3 else len(data)  # type: ignore[misc]
        out.append(struct.pack(order + "IIII", sec, frac, len(data), orig) + data)
    return b"".join(out)


def _options(opts: Sequence[tuple[int, bytes]], order: str) -> bytes:
    if not opts:
        return b""
    out = b""
    for code, value in opts:
        out += struct.pack(order + "HH", code, len(value)) + value
        out += b"\x00" * (-len(value) % 4)
    return out + struct.pack(order + "HH", 0, 0)


def pcapng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    body = body + b"\x00" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack(order + "II", btype, size) + body + struct.pack(order + "I", size)


def pcapng_shb(order: str = "<") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return pcapng_block(0x0A0D0D0A, body, order)


def pcapng_idb(
    linktype: int,
    snaplen: int = 65535,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    order: str = "<",
) -> bytes:
    opts: list[tuple[int, bytes]] = []
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(order + "q", tsoffset)))
    body = struct.pack(order + "HHI", linktype, 0, snaplen) + _options(opts, order)
    return pcapng_block(1, body, order)


def pcapng_epb(
    iface: int, ticks: int, data: bytes, orig: int | None = None, order: str = "<"
) -> bytes:
    wire = len(data) if orig is None else orig
    body = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire)
    return pcapng_block(6, body + data, order)


def pcapng_opb(
    iface: int, ticks: int, data: bytes, orig: int | None = None, order: str = "<"
) -> bytes:
    wire = len(data) if orig is None else orig
    body = struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire)
    return pcapng_block(2, body + data, order)


def pcapng_spb(data: bytes, orig: int | None = None, order: str = "<") -> bytes:
    wire = len(data) if orig is None else orig
    return pcapng_block(3, struct.pack(order + "I", wire) + data, order)


def write(directory: Path, name: str, content: bytes) -> Path:
    path = directory / name
    path.write_bytes(content)
    return path
