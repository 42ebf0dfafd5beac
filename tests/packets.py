"""Hand-made packet sequences for unit tests (no capture file needed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from classifier.capture.packet import TCP, UDP, Packet
from classifier.names.tls import build_client_hello

CLIENT = "10.77.1.2"
SERVER = "10.77.2.2"

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def tcp(
    ts: float,
    up: bool,
    payload_len: int = 0,
    flags: int = ACK,
    *,
    cport: int = 50000,
    sport: int = 443,
    payload: bytes = b"",
    seq: int = 0,
) -> Packet:
    """A TCP packet of the CLIENT:cport <-> SERVER:sport flow; IPv4, 20+20 header bytes."""
    src, dst, sp, dp = (CLIENT, SERVER, cport, sport) if up else (SERVER, CLIENT, sport, cport)
    ip_len = 40 + payload_len
    return Packet(
        ts=ts,
        wire_len=ip_len + 14,
        ip_len=ip_len,
        version=4,
        src=src,
        dst=dst,
        proto=TCP,
        sport=sp,
        dport=dp,
        tcp_flags=flags,
        seq=seq,
        payload_len=payload_len,
        payload=payload,
    )


def udp(
    ts: float,
    up: bool,
    payload_len: int,
    *,
    cport: int = 50000,
    sport: int = 443,
    payload: bytes = b"",
    client: str = CLIENT,
    server: str = SERVER,
) -> Packet:
    """A UDP packet between client:cport and server:sport; IPv4, 20+8 header bytes."""
    src, dst, sp, dp = (client, server, cport, sport) if up else (server, client, sport, cport)
    ip_len = 28 + payload_len
    return Packet(
        ts=ts,
        wire_len=ip_len + 14,
        ip_len=ip_len,
        version=4,
        src=src,
        dst=dst,
        proto=UDP,
        sport=sp,
        dport=dp,
        tcp_flags=0,
        seq=0,
        payload_len=payload_len,
        payload=payload,
    )


def handshake(t0: float = 0.0, **kw: int) -> list[Packet]:
    """SYN, SYN+ACK, ACK."""
    return [
        tcp(t0, True, 0, SYN, **kw),
        tcp(t0 + 0.01, False, 0, SYN | ACK, **kw),
        tcp(t0 + 0.02, True, 0, ACK, **kw),
    ]


def downloads(
    cport: int, seconds: Sequence[int], name: str | None = "rr3---sn-lab.googlevideo.com"
) -> list[Packet]:
    """A TCP connection to SERVER that brings 300 kB down in each of ``seconds``; with a
    ``name``, it opens with a handshake and a ClientHello for that server name (without,
    it began before the capture: no handshake, no name)."""
    t0 = float(seconds[0])
    out: list[Packet] = []
    if name is not None:
        hello = build_client_hello(name, ("h2",))
        out += handshake(t0 - 0.5, cport=cport)
        out.append(tcp(t0 - 0.4, True, len(hello), PSH | ACK, cport=cport, payload=hello, seq=1))
    for sec in seconds:
        out += [tcp(sec + i / 400, False, 1460, cport=cport) for i in range(205)]
    return out


def to_server(server: str, packets: list[Packet]) -> list[Packet]:
    """``packets`` (of a flow to SERVER) sent to or from ``server`` instead."""
    return [
        dataclasses.replace(p, dst=server)
        if p.src == CLIENT
        else dataclasses.replace(p, src=server)
        for p in packets
    ]


def replay(
    process: Callable[[list[Packet]], None],
    clock: Any,
    packets: Sequence[Packet],
    rounds: int,
    shift: float = 30.1,
) -> None:
    """Feed ``packets`` ``rounds`` times (each round ``shift`` seconds later) to a live
    router's ``process`` in batches of 0.2 s of capture time, moving the fake ``clock``
    (its ``t``) along; the last batch goes in 1 s after its packets."""
    batch: list[Packet] = []
    for i in range(rounds):
        for pkt in packets:
            batch.append(dataclasses.replace(pkt, ts=pkt.ts + shift * i))
            if batch[-1].ts - clock.t >= 0.2:
                clock.t = batch[-1].ts
                process(batch)
                batch = []
    clock.t += 1
    process(batch)
