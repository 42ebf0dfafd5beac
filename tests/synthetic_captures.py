"""Synthetic captures for tests and benchmarks, written with
:mod:`classifier.capture.pcap_writer`.

* :func:`write_many_flows`: many short TLS conversations (a tenth with a DNS lookup), a pcap
  built packet by packet (``benchmarks/gen_captures.py many-flows``);
* :func:`write_syn_flood`, :func:`write_udp_scan`, :func:`write_long_flow`,
  :func:`write_sequential_flows`: floods and long captures built with numpy, millions of
  packets a second (``benchmarks/floods.py``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from dnslib import QTYPE, RR, A, DNSRecord

from classifier.capture.pcap_writer import LINKTYPE_ETHERNET, PcapWriter, record_headers
from classifier.names.tls import build_client_hello

__all__ = [
    "write_many_flows",
    "write_records",
    "write_syn_flood",
    "write_udp_scan",
    "write_long_flow",
    "write_sequential_flows",
]

_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01

_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
_MAC_C = bytes.fromhex("020000000001")
_MAC_S = bytes.fromhex("020000000002")


# ---------------------------------------------------------------------------------------
# many-flows: a pcap written directly


def _ip4(a: str) -> bytes:
    return socket.inet_aton(a)


def _frame(src: bytes, dst: bytes, proto: int, l4: bytes, c2s: bool) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst)
    eth = (_MAC_S + _MAC_C) if c2s else (_MAC_C + _MAC_S)
    return eth + b"\x08\x00" + ip + l4


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _flow_packets(k: int, t0: float) -> list[tuple[float, bytes]]:
    """The packets of conversation ``k`` (and of its DNS lookup, for every 10th)."""
    client = _ip4(f"10.77.{1 + (k // 250) % 50}.{1 + k % 250}")
    server = _ip4(f"10.77.{100 + (k // 200) % 100}.{1 + k % 200}")
    cport = 32768 + (k * 7) % 28000
    name = f"img{k % 2000}.bench.example"
    rtt = 0.010 + (k % 17) * 0.002
    out: list[tuple[float, bytes]] = []
    t = t0
    if k % 10 == 0:
        resolver = _ip4("10.77.250.53")
        query = DNSRecord.question(name)
        reply = query.reply()
        reply.add_answer(RR(name, QTYPE.A, rdata=A(socket.inet_ntoa(server)), ttl=300))
        qport = 40000 + k % 20000
        out.append((t, _frame(client, resolver, 17, _udp(qport, 53, query.pack()), True)))
        out.append((t + 0.004, _frame(resolver, client, 17, _udp(53, qport, reply.pack()), False)))
        t += 0.005
    hello = build_client_hello(name, ("h2", "http/1.1"))
    cs, ss = 1000 + k, 5000 + k
    steps = [
        (0.0, True, _SYN, b""),
        (rtt / 2, False, _SYN | _ACK, b""),
        (rtt, True, _ACK, b""),
        (rtt, True, _PSH | _ACK, hello),
        (1.5 * rtt, False, _ACK, b"\x17" * 1400),
        (1.5 * rtt + 0.0002, False, _ACK, b"\x17" * 1400),
        (1.5 * rtt + 0.0004, False, _PSH | _ACK, b"\x17" * (200 + k % 900)),
        (2 * rtt, True, _ACK, b""),
        (2 * rtt + 0.05, True, _FIN | _ACK, b""),
        (2.5 * rtt + 0.05, False, _FIN | _ACK, b""),
        (3 * rtt + 0.05, True, _ACK, b""),
    ]
    for dt, c2s, flags, payload in steps:
        if c2s:
            l4 = _tcp(cport, 443, cs, ss, flags, payload)
            cs += len(payload) + (1 if flags & (_SYN | _FIN) else 0)
            out.append((t + dt, _frame(client, server, 6, l4, True)))
        else:
            l4 = _tcp(443, cport, ss, cs, flags, payload)
            ss += len(payload) + (1 if flags & (_SYN | _FIN) else 0)
            out.append((t + dt, _frame(server, client, 6, l4, False)))
    return out


def write_many_flows(path: Path, flows: int = 120_000, spacing: float = 0.0005) -> int:
    """Write the many-flows capture; return its packet count."""
    packets: list[tuple[float, bytes]] = []
    for k in range(flows):
        packets.extend(_flow_packets(k, k * spacing))
    packets.sort(key=lambda p: p[0])
    with PcapWriter(path, LINKTYPE_ETHERNET) as out:
        for ts, frame in packets:
            sec, usec = divmod(round(ts * 1e6), 1_000_000)
            out.write_us(_EPOCH + sec, usec, frame)
    return len(packets)


# ---------------------------------------------------------------------------------------
# floods and long captures: numpy, a chunk of records at a time

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_ETH = bytes.fromhex("0200000000020200000000010800")
_CHUNK = 1 << 20
_T0 = 1_704_067_200.0  # 2024-01-01


def _ip(a: int, b: int, c: int, d: int) -> int:
    return (a << 24) | (b << 16) | (c << 8) | d


def _be(col: npt.NDArray[np.integer], width: int) -> npt.NDArray[np.uint8]:
    """Big-endian bytes of an integer column: shape (n, width)."""
    v = col.astype(np.uint64)
    shifts = np.arange(8 * (width - 1), -1, -8, dtype=np.uint64)
    return ((v[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


def write_records(
    out: PcapWriter,
    ts: F64,
    src: I64,
    dst: I64,
    proto: int,
    sport: I64,
    dport: I64,
    flags: I64,
    ip_len: I64,
    caplen: int,
) -> int:
    """Append pcap records (Ethernet/IPv4/TCP or UDP) for arrays of equal length to
    ``out``; ``caplen`` bytes of each frame are stored (header-only when
    below the frame size; the rest is zero payload). Returns the bytes written."""
    n = len(ts)
    l4 = 20 if proto == 6 else 8
    head = 14 + 20 + l4
    rec = np.zeros((n, 16 + caplen), np.uint8)
    sec = np.floor(ts)
    usec = np.round((ts - sec) * 1e6).clip(0, 999_999)
    rec[:, 0:16] = record_headers(sec.astype(np.int64), usec.astype(np.int64), caplen, ip_len + 14)
    f = 16
    rec[:, f : f + 14] = np.frombuffer(_ETH, np.uint8)
    ip = f + 14
    rec[:, ip] = 0x45
    rec[:, ip + 2 : ip + 4] = _be(ip_len, 2)
    rec[:, ip + 8] = 64
    rec[:, ip + 9] = proto
    rec[:, ip + 12 : ip + 16] = _be(src, 4)
    rec[:, ip + 16 : ip + 20] = _be(dst, 4)
    t = ip + 20
    rec[:, t : t + 2] = _be(sport, 2)
    rec[:, t + 2 : t + 4] = _be(dport, 2)
    if proto == 6:
        rec[:, t + 4 : t + 8] = _be(np.arange(n, dtype=np.int64) * 1460 % (1 << 32), 4)
        rec[:, t + 12] = 0x50
        rec[:, t + 13] = flags
        rec[:, t + 14 : t + 16] = 0xFF
    else:
        rec[:, t + 4 : t + 6] = _be(ip_len - 20, 2)
    assert caplen >= head
    data = rec.tobytes()
    out.write_raw(data, n)
    return len(data)


def _write(path: Path, chunks: Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]) -> int:
    with PcapWriter(path, LINKTYPE_ETHERNET) as out:
        for chunk in chunks:
            write_records(out, *chunk)
    return out.bytes_written


def write_syn_flood(path: Path, flows: int, pps: float = 100_000.0) -> int:
    """One SYN per distinct 5-tuple; returns the file size."""

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        for a in range(0, flows, _CHUNK):
            i = np.arange(a, min(flows, a + _CHUNK), dtype=np.int64)
            src = _ip(10, 77, 128, 0) + (i >> 4) % 32768
            sport = 1024 + (i & 15) + 16 * ((i >> 19) & 63)
            n = len(i)
            yield (
                _T0 + i / pps,
                src,
                np.full(n, _ip(10, 77, 0, 1)),
                6,
                sport,
                np.full(n, 80),
                np.full(n, _SYN),
                np.full(n, 40),
                54,
            )

    return _write(path, chunks())


def write_udp_scan(path: Path, flows: int, pps: float = 100_000.0) -> int:
    """One UDP datagram per distinct destination address and port."""

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        for a in range(0, flows, _CHUNK):
            i = np.arange(a, min(flows, a + _CHUNK), dtype=np.int64)
            n = len(i)
            dst = _ip(10, 77, 64, 0) + (i // 65535) % 16384
            yield (
                _T0 + i / pps,
                np.full(n, _ip(10, 77, 0, 2)),
                dst,
                17,
                np.full(n, 40000),
                1 + i % 65535,
                np.zeros(n, np.int64),
                np.full(n, 28),
                42,
            )

    return _write(path, chunks())


def write_long_flow(path: Path, packets: int, pps: float = 100_000.0) -> int:
    """One TCP flow: two server data packets (1500 bytes on the wire) per client ACK."""
    client, server = _ip(10, 77, 1, 2), _ip(10, 77, 2, 2)

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        for a in range(0, packets, _CHUNK):
            i = np.arange(a, min(packets, a + _CHUNK), dtype=np.int64)
            up = (i % 3 == 2) | (i == 0)  # the client's SYN opens the flow
            src = np.where(up, client, server)
            dst = np.where(up, server, client)
            sport = np.where(up, 50000, 443)
            dport = np.where(up, 443, 50000)
            flags = np.where(i == 0, _SYN, _ACK)
            ip_len = np.where(up, 40, 1500)
            yield (_T0 + i / pps, src, dst, 6, sport, dport, flags, ip_len, 54)

    return _write(path, chunks())


def write_sequential_flows(
    path: Path, megabytes: float, per_flow: int = 500, flow_seconds: float = 2.0
) -> tuple[int, int]:
    """Back-to-back TCP flows of full 1514-byte frames, each closed by FIN both ways,
    until the file reaches ``megabytes``; returns (file size, flows)."""
    frame_rec = 16 + 1514
    total = int(megabytes * 1e6 // frame_rec)
    flows = max(1, total // per_flow)
    client, server = _ip(10, 77, 1, 2), _ip(10, 77, 2, 2)

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        step = max(1, _CHUNK // 16 // per_flow)  # flows per chunk (~100 MB of records)
        for f0 in range(0, flows, step):
            f = np.arange(f0, min(flows, f0 + step), dtype=np.int64)
            k = np.tile(np.arange(per_flow, dtype=np.int64), len(f))
            fl = np.repeat(f, per_flow)
            up = (k % 2 == 0) | (k == per_flow - 2)
            src = np.where(up, client, server)
            dst = np.where(up, server, client)
            cport = 20000 + fl % 40000
            sport = np.where(up, cport, 443)
            dport = np.where(up, 443, cport)
            flags = np.full(len(k), _ACK | _PSH)
            flags[k == 0] = _SYN
            flags[k >= per_flow - 2] = _FIN | _ACK
            ts = _T0 + fl * (flow_seconds * 1.5) + k * (flow_seconds / per_flow)
            yield (ts, src, dst, 6, sport, dport, flags, np.full(len(k), 1500), 1514)

    return _write(path, chunks()), flows
