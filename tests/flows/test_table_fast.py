"""FlowAssigner (compiled) against FlowTable (reference), packet for packet.

Random packet sequences over a handful of hosts and ports (so 5-tuples collide and TCP
closes, new SYNs on closing flows and evictions happen), with timestamps that sometimes go
backwards, fed in chunks of several sizes under many table configurations. Every packet's
flow id and direction, every ended flow (id, end reason, packet at which it ended, times,
entry count with resegmentation, wire bytes, client/server) and the table counters must
be identical.
"""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from classifier.capture import decode_fast as dc
from classifier.capture.packet import Packet
from classifier.flows import FlowConfig, FlowTable
from classifier.flows.table_fast import END_REASONS, EndedFlows, FlowAssigner

ROWS = (
    dc.C_VER,
    dc.C_SRC_HI,
    dc.C_SRC_LO,
    dc.C_DST_HI,
    dc.C_DST_LO,
    dc.C_PROTO,
    dc.C_SPORT,
    dc.C_DPORT,
    dc.C_FLAGS,
    dc.C_PLEN,
    dc.C_WIRE,
)
V4 = ("10.77.0.1", "10.77.0.2", "10.77.0.3")
V6 = ("fe80::1", "fe80::2", "::ffff:10.77.0.1")
PORTS = (53, 80, 443, 1024, 5000, 40000, 50000, 60000)
STEPS = (0.0, 0.001, 0.3, 0.9, 1.5, 3.0, 50.0, -0.5, -2.0)
TCP_FLAGS = (0x10, 0x02, 0x12, 0x11, 0x01, 0x04, 0x18, 0x14, 0x10)

Ended = tuple[int, str, int, float, float, int, int, str, int, str, int]


def _halves(addr: str) -> tuple[int, int, int]:
    if ":" not in addr:
        return 4, 0, int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    raw = socket.inet_pton(socket.AF_INET6, addr)
    hi, lo = (int(np.uint64(int.from_bytes(x, "big")).astype(np.int64)) for x in (raw[:8], raw[8:]))
    return 6, hi, lo


def _name(version: int, hi: int, lo: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, (lo & 0xFFFFFFFF).to_bytes(4, "big"))
    raw = (hi & (2**64 - 1)).to_bytes(8, "big") + (lo & (2**64 - 1)).to_bytes(8, "big")
    return socket.inet_ntop(socket.AF_INET6, raw)


def _columns(pkts: list[Packet]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.array([p.ts for p in pkts], np.float64)
    cols = np.zeros((len(dc.COLUMNS), len(pkts)), np.int64)
    for i, p in enumerate(pkts):
        v, shi, slo = _halves(p.src)
        _, dhi, dlo = _halves(p.dst)
        cols[dc.C_VER, i], cols[dc.C_SRC_HI, i], cols[dc.C_SRC_LO, i] = v, shi, slo
        cols[dc.C_DST_HI, i], cols[dc.C_DST_LO, i] = dhi, dlo
        cols[dc.C_PROTO, i], cols[dc.C_SPORT, i], cols[dc.C_DPORT, i] = p.proto, p.sport, p.dport
        cols[dc.C_FLAGS, i], cols[dc.C_PLEN, i] = p.tcp_flags, p.payload_len
        cols[dc.C_WIRE, i] = p.wire_len
    return ts, cols


def _packets(rng: random.Random, n: int) -> list[Packet]:
    t = 0.0
    out = []
    for _ in range(n):
        t += rng.choice(STEPS)
        if rng.random() < 0.7:
            a, b = rng.choice(V4), rng.choice(V4)
        else:
            a, b = rng.choice(V6[:2]), rng.choice(V6)
        proto = rng.choice((6, 6, 17))
        flags = rng.choice(TCP_FLAGS) if proto == 6 else 0
        plen = rng.choice((0, 0, 10, 1400, 3000, 9000))
        out.append(
            Packet(
                t,
                plen + 54,
                plen + 40,
                6 if ":" in a else 4,
                a,
                b,
                proto,
                rng.choice(PORTS),
                rng.choice(PORTS),
                flags,
                0,
                plen,
                b"",
            )
        )
    return out


def _ended_rows(e: EndedFlows, offset: int) -> list[Ended]:
    chi, clo, cport = e.client
    shi, slo, sport = e.server
    rows = []
    for j in range(len(e)):
        at = int(e.at[j])
        v = int(e.version[j])
        rows.append(
            (
                int(e.uid[j]),
                END_REASONS[int(e.reason[j])],
                at + offset if at >= 0 else -1,
                float(e.first_ts[j]),
                float(e.last_ts[j]),
                int(e.packets[j]),
                int(e.wire_bytes[j]),
                _name(v, int(chi[j]), int(clo[j])),
                int(cport[j]),
                _name(v, int(shi[j]), int(slo[j])),
                int(sport[j]),
            )
        )
    return rows


def _reference(
    pkts: list[Packet], cfg: FlowConfig
) -> tuple[list[int], list[int], list[Ended], FlowTable]:
    table = FlowTable(cfg)
    uid, direction, ended = [], [], []

    def collect(at: int) -> None:
        for f in table.pop_ended():
            k = f.key
            ended.append(
                (
                    f.flow_id,
                    f.end_reason,
                    at,
                    f.first_ts,
                    f.last_ts,
                    f.packets,
                    f.wire_bytes,
                    k.client,
                    k.client_port,
                    k.server,
                    k.server_port,
                )
            )

    for i, p in enumerate(pkts):
        flow = table.add(p)
        uid.append(flow.flow_id)
        direction.append(int(flow.direction[-1]))
        collect(i)
    table.flush()
    collect(-1)
    return uid, direction, ended, table


def _compiled(
    pkts: list[Packet], cfg: FlowConfig, chunk: int
) -> tuple[list[int], list[int], list[Ended], FlowAssigner]:
    ts, cols = _columns(pkts)
    fa = FlowAssigner(cfg, capacity=16)
    uid: list[int] = []
    direction: list[int] = []
    ended: list[Ended] = []
    for s in range(0, len(pkts), chunk):
        a = fa.assign(ts[s : s + chunk], np.ascontiguousarray(cols[:, s : s + chunk]), ROWS)
        uid += a.uid.tolist()
        direction += a.direction.tolist()
        ended += _ended_rows(a.ended, s)
    ended += _ended_rows(fa.flush(), 0)
    return uid, direction, ended, fa


def _configs() -> list[tuple[int, FlowConfig, int]]:
    out = []
    for seed in range(60):
        r = random.Random(seed)
        cfg = FlowConfig(
            idle_timeout=r.choice((1.0, 5.0, 120.0)),
            active_timeout=r.choice((2.0, 30.0, 1800.0)),
            close_linger=r.choice((0.0, 1.0)),
            max_flows=r.choice((3, 20, 1000)),
            sweep_interval=r.choice((0.5, 1.0, 10.0)),
            resegment_mss=r.choice((None, 1448, 64)),
            max_packets=r.choice((None, 1_000_000, 4, 30)),
        )
        out.append((seed, cfg, r.choice((7, 50, 1000))))
    return out


@pytest.mark.parametrize(("seed", "cfg", "chunk"), _configs())
def test_same_flows_as_flow_table(seed: int, cfg: FlowConfig, chunk: int) -> None:
    pkts = _packets(random.Random(seed), 300)
    ref_uid, ref_dir, ref_end, table = _reference(pkts, cfg)
    uid, direction, ended, fa = _compiled(pkts, cfg, chunk)
    assert uid == ref_uid
    assert direction == ref_dir
    # flows closing at the same sweep come out in hash order in the reference
    assert sorted(ended) == sorted(ref_end)
    st, got = table.stats, fa.stats
    assert (got.packets, got.flows, got.peak_flows, got.ended) == (
        st.packets,
        st.flows,
        st.peak_flows,
        st.ended,
    )
    assert len(fa) == 0


def _scripted() -> list[Packet]:
    """TCP conversations that close with FIN both ways (then trailing ACKs within the
    linger, and a new SYN on the closing 5-tuple), or with RST; mixed with UDP."""
    out: list[Packet] = []
    t = 100.0

    def tcp(src: str, dst: str, sport: int, dport: int, flags: int, plen: int = 0) -> None:
        out.append(
            Packet(t, plen + 54, plen + 40, 4, src, dst, 6, sport, dport, flags, 0, plen, b"")
        )

    c, s = "10.77.1.2", "10.77.2.2"
    for k in range(6):
        port = 40000 + k % 3
        tcp(c, s, port, 443, 0x02)
        t += 0.01
        tcp(s, c, 443, port, 0x12)
        tcp(c, s, port, 443, 0x10, 517)
        t += 0.02
        tcp(s, c, 443, port, 0x10, 3000)
        if k % 2:
            tcp(c, s, port, 443, 0x14)
        else:
            tcp(c, s, port, 443, 0x11)
            t += 0.01
            tcp(s, c, 443, port, 0x11)
            tcp(c, s, port, 443, 0x10)
        t += 0.3 * (k % 3)
        out.append(Packet(t, 80, 66, 4, c, "10.77.3.3", 17, 5353, 5353, 0, 0, 38, b""))
    return out


@pytest.mark.parametrize("linger", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_tcp_close_sequences(linger: float, chunk: int) -> None:
    cfg = FlowConfig(close_linger=linger, sweep_interval=0.1, resegment_mss=1448)
    pkts = _scripted()
    ref_uid, ref_dir, ref_end, table = _reference(pkts, cfg)
    uid, direction, ended, fa = _compiled(pkts, cfg, chunk)
    assert (uid, direction) == (ref_uid, ref_dir)
    assert sorted(ended) == sorted(ref_end)
    assert fa.stats.ended == table.stats.ended


def test_reasons_are_exercised() -> None:
    """The cases above reach every end reason (else they test less than they say)."""
    seen: set[str] = set()
    for seed, cfg, chunk in _configs():
        _, _, ended, _ = _compiled(_packets(random.Random(seed), 300), cfg, chunk)
        seen |= {e[1] for e in ended}
    _, _, ended, _ = _compiled(_scripted(), FlowConfig(close_linger=0.2, sweep_interval=0.1), 5)
    seen |= {e[1] for e in ended}
    assert seen == set(END_REASONS)


def test_grows_past_initial_capacity_and_evicts_at_cap() -> None:
    cfg = FlowConfig(max_flows=100)
    pkts = [
        Packet(
            float(i) * 0.001, 60, 46, 4, "10.77.0.1", "10.77.0.2", 17, 40000 + i, 53, 0, 0, 18, b""
        )
        for i in range(500)
    ]
    uid, _, ended, fa = _compiled(pkts, cfg, 128)
    assert uid == list(range(1, 501))
    assert fa.stats.peak_flows == 100
    assert fa.stats.ended == {"evicted": 400, "end": 100}
    assert [e[0] for e in ended if e[1] == "evicted"] == list(range(1, 401))
