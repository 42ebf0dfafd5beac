"""Build NFLOG netlink datagrams the way nfnetlink_log lays them out, from IP packets.

Layout per message: nlmsghdr (host order), nfgenmsg, then attributes (host-order TLV
headers, big-endian values): NFULA_PACKET_HDR, NFULA_TIMESTAMP, NFULA_IFINDEX_OUTDEV,
NFULA_PAYLOAD, NFULA_SEQ; several messages per datagram, closed by NLMSG_DONE as the kernel
does when it batches.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

MSG_PACKET = (4 << 8) | 0
NLMSG_DONE = 3
NLM_F_MULTI = 0x2


def attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def nlmsg(kind: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


def packet_message(ip: bytes, ts: float | None, seq: int | None, snaplen: int = 0xFFFF) -> bytes:
    """One NFULNL_MSG_PACKET message carrying the first ``snaplen`` bytes of ``ip``."""
    version = ip[0] >> 4 if ip else 4
    body = struct.pack("=BBH", 2 if version == 4 else 10, 0, 0)  # nfgenmsg, group 0
    body += attr(1, struct.pack(">HBB", 0x0800 if version == 4 else 0x86DD, 2, 0))
    if ts is not None:
        sec = int(ts)
        body += attr(3, struct.pack(">QQ", sec, round((ts - sec) * 1e6)))
    body += attr(5, struct.pack(">I", 3))
    body += attr(9, ip[:snaplen])
    if seq is not None:
        body += attr(12, struct.pack(">I", seq))
    return nlmsg(MSG_PACKET, body, NLM_F_MULTI)


def datagrams(
    ips: Sequence[tuple[float, bytes]], per_datagram: int, snaplen: int = 0xFFFF, first_seq: int = 0
) -> list[bytes]:
    """Messages for ``(ts, ip)`` pairs, ``per_datagram`` to a datagram, numbered from
    ``first_seq`` (wrapping at 2**32 as the kernel does)."""
    out = []
    for start in range(0, len(ips), per_datagram):
        chunk = ips[start : start + per_datagram]
        data = b"".join(
            packet_message(ip, ts, (first_seq + start + i) & 0xFFFFFFFF, snaplen)
            for i, (ts, ip) in enumerate(chunk)
        )
        if len(chunk) > 1:
            data += nlmsg(NLMSG_DONE, b"\0" * 4, NLM_F_MULTI)
        out.append(data)
    return out


def pcap_ip_packets(path: Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp, IP packet bytes) of a little- or big-endian pcap file with Ethernet or raw
    IP frames (VLAN tags followed); other frames are left out."""
    data = path.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    divisor = 1e9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(order + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = _ip_of(frame, linktype)
        if ip:
            yield sec + frac / divisor, ip


def _ip_of(frame: bytes, linktype: int) -> bytes:
    if linktype == 101:
        return frame
    if linktype != 1 or len(frame) < 14:
        return b""
    off, etype = 14, struct.unpack_from(">H", frame, 12)[0]
    while etype == 0x8100 and len(frame) >= off + 4:
        etype = struct.unpack_from(">H", frame, off + 2)[0]
        off += 4
    return frame[off:] if etype in (0x0800, 0x86DD) else b""
