"""Read the netpkt text trace format and write it as a header-only pcap.

The format (github.com/eusoubrasileiro/netpkt_vidcls, ``python/data``): gzip (or plain) text,
one packet a line, 14 whitespace-separated columns::

    src dst ip_len tcp_sport tcp_dport udp_sport udp_dport epoch_ts ipid ttl ipflags \
        tcp_seq tcp_ack tcp_flags

``ip_len`` is the IPv4 total length; the ports of the other transport are ``-1``;
``tcp_flags`` is ``NONE`` for UDP and letters (``S``, ``A``, ``P``, ``F``, ``R``, ...) for
TCP. Addresses, ports, TCP flags, sequence numbers and timing are real; there is no payload.

The pcap written keeps all of that: Ethernet + IPv4 + TCP/UDP headers only, the frame's
wire length (``ip_len + 14``) in the record header (as the header-only Requet captures do),
so every feature that reads lengths sees the true sizes. The TCP header length is taken per
connection: 32 bytes (timestamps option) when the connection's smallest packet is a
52-byte bare ACK, else 20. Lines are sorted by time (stably); how many were out of order is
returned. Errors name the file and line.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from classifier.capture.pcap_writer import LINKTYPE_ETHERNET, PcapWriter
from classifier.errors import DatasetError

__all__ = ["NetpktPacket", "read_netpkt", "write_netpkt_pcap", "is_netpkt", "skip_or_raise"]

_ETH = 14
_IP = 20
_UDP = 8
_TCP_PLAIN, _TCP_TS = 20, 32
_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
_TS_OPTIONS = bytes((1, 1, 8, 10)) + bytes(8)  # NOP NOP timestamps(10): 12 bytes
_MACS = bytes.fromhex("020000c90002020000c80002")


@dataclass(frozen=True, slots=True)
class NetpktPacket:
    """One line of a netpkt trace."""

    ts_us: int
    src: bytes  # 4 bytes
    dst: bytes
    ip_len: int
    proto: int  # 6 or 17
    sport: int
    dport: int
    ip_id: int
    ttl: int
    dont_fragment: bool
    seq: int
    ack: int
    flags: int


def is_netpkt(path: Path) -> bool:
    """Whether ``path`` is named like a netpkt trace (``*.txt`` or ``*.txt.gz``)."""
    name = path.name.lower()
    return name.endswith(".txt.gz") or name.endswith(".txt")


def _open(path: Path) -> TextIO:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def _flags(text: str, where: str) -> int:
    if text == "NONE":
        return 0
    bits = 0
    for ch in text:
        if ch not in _FLAGS:
            raise DatasetError(f"{where}: unknown TCP flag {ch!r} in {text!r}")
        bits |= _FLAGS[ch]
    return bits


def _parse(line: str, where: str) -> NetpktPacket:
    f = line.split()
    if len(f) != 14:
        raise DatasetError(f"{where}: expected 14 columns (netpkt format), got {len(f)}")
    try:
        src = ipaddress.IPv4Address(f[0]).packed
        dst = ipaddress.IPv4Address(f[1]).packed
        ip_len = int(f[2])
        tsp, tdp, usp, udp = (int(x) for x in f[3:7])
        ts_us = round(float(f[7]) * 1_000_000)
        ip_id, ttl = int(f[8]), int(f[9])
        seq, ack = int(f[11]), int(f[12])
    except ValueError as exc:
        raise DatasetError(f"{where}: not a netpkt record ({exc})") from exc
    tcp = tsp >= 0 and tdp >= 0
    if not tcp and not (usp >= 0 and udp >= 0):
        raise DatasetError(f"{where}: neither TCP nor UDP ports are set")
    proto, sport, dport = (6, tsp, tdp) if tcp else (17, usp, udp)
    smallest = _IP + (_TCP_PLAIN if tcp else _UDP)
    if not smallest <= ip_len <= 65535 or not (0 <= sport < 65536 and 0 <= dport < 65536):
        raise DatasetError(f"{where}: impossible IP length {ip_len} or port")
    return NetpktPacket(
        ts_us,
        src,
        dst,
        ip_len,
        proto,
        sport,
        dport,
        ip_id & 0xFFFF,
        ttl & 0xFF,
        "DF" in f[10],
        seq & 0xFFFFFFFF if seq >= 0 else 0,
        ack & 0xFFFFFFFF if ack >= 0 else 0,
        _flags(f[13], where) if tcp else 0,
    )


def skip_or_raise(error: DatasetError, skipped: list[str] | None) -> None:
    """Raise ``error``; with ``skipped`` (a list: an import with ``--skip-bad``), note it
    there instead, so that the caller leaves its record out and goes on."""
    if skipped is None:
        raise error
    skipped.append(str(error))


def read_netpkt(path: Path, skipped: list[str] | None = None) -> tuple[list[NetpktPacket], int]:
    """The packets of a netpkt trace sorted by time, and how many lines were out of order.

    Raises :class:`DatasetError` naming the file and line for a malformed line, or if the
    file is missing, unreadable or empty. With ``skipped`` (a list), a malformed line is
    left out and its error appended there instead, and a compressed file that breaks off
    keeps the lines read before the break (noted there too).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: trace not found")
    packets: list[NetpktPacket] = []
    n = 0
    try:
        with _open(path) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    packets.append(_parse(line, f"{path}:{n}"))
                except DatasetError as exc:
                    skip_or_raise(exc, skipped)
    except (OSError, EOFError, zlib.error) as exc:
        if skipped is None or not packets:
            raise DatasetError(
                f"{path}: cannot read trace after line {n} ({exc}); re-fetch the file, or "
                "import with --skip-bad to keep the lines before"
            ) from exc
        skipped.append(f"{path}: breaks off after line {n} ({exc}); the lines before are kept")
    if not packets:
        raise DatasetError(f"{path}: no packets in this trace")
    backwards = sum(1 for a, b in zip(packets, packets[1:], strict=False) if b.ts_us < a.ts_us)
    packets.sort(key=lambda p: p.ts_us)
    return packets, backwards


def _conn_key(p: NetpktPacket) -> tuple[int, bytes, int, bytes, int]:
    a, b = (p.src, p.sport), (p.dst, p.dport)
    lo, hi = (a, b) if a <= b else (b, a)
    return (p.proto, lo[0], lo[1], hi[0], hi[1])


def _tcp_header_lengths(
    packets: list[NetpktPacket],
) -> dict[tuple[int, bytes, int, bytes, int], int]:
    smallest: dict[tuple[int, bytes, int, bytes, int], int] = {}
    for p in packets:
        if p.proto == 6:
            key = _conn_key(p)
            smallest[key] = min(smallest.get(key, 65535), p.ip_len)
    return {k: _TCP_TS if v >= _IP + _TCP_TS else _TCP_PLAIN for k, v in smallest.items()}


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frames(packets: list[NetpktPacket]) -> Iterator[tuple[int, bytes, int]]:
    thl = _tcp_header_lengths(packets)
    for p in packets:
        if p.proto == 6:
            hl = min(thl[_conn_key(p)], p.ip_len - _IP)
            hl -= hl % 4
            opts = _TS_OPTIONS[: hl - _TCP_PLAIN]
            l4 = (
                struct.pack(
                    "!HHIIBBHHH",
                    p.sport,
                    p.dport,
                    p.seq,
                    p.ack,
                    (hl // 4) << 4,
                    p.flags,
                    65535,
                    0,
                    0,
                )
                + opts
            )
        else:
            l4 = struct.pack("!HHHH", p.sport, p.dport, p.ip_len - _IP, 0)
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            p.ip_len,
            p.ip_id,
            0x4000 if p.dont_fragment else 0,
            p.ttl,
            p.proto,
            0,
            p.src,
            p.dst,
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        yield p.ts_us, _MACS + b"\x08\x00" + ip + l4, _ETH + p.ip_len


def write_netpkt_pcap(packets: list[NetpktPacket], out: Path) -> None:
    """Write ``packets`` as a header-only Ethernet pcap at ``out`` (atomically)."""
    tmp = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with PcapWriter(tmp, LINKTYPE_ETHERNET) as writer:
            for ts, head, wire in _frames(packets):
                writer.write_us(ts // 1_000_000, ts % 1_000_000, head, wire)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"{out}: cannot write pcap: {exc.strerror or exc}") from exc
