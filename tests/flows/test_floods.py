"""Floods: the flow table and featurize stay within their caps (CI sizes; the full sizes
are in benchmarks/floods.py).

Memory is checked two ways: exact accounting of what the table holds (flows, packet
entries per flow) and the process's resident set (VmRSS) growth, with generous margins.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from classifier.capture import open_capture
from classifier.capture.packet import TCP, Packet
from classifier.features.featurize import (
    FeaturizeConfig,
    FeaturizeStats,
    featurize,
    featurize_packets,
    row_columns,
)
from classifier.flows import DOWN, UP, Flow, FlowConfig, FlowTable
from classifier.names.plugin import NamesPlugin
from tests.packets import ACK, CLIENT, SERVER, SYN, handshake, tcp
from tests.synthetic_captures import write_long_flow, write_syn_flood, write_udp_scan

ROOT = Path(__file__).resolve().parents[2]


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _entry_bytes(flow: Flow) -> int:
    """Bytes held in a flow's packet arrays (allocated, not just used)."""
    return sum(
        a.buffer_info()[1] * a.itemsize
        for a in (flow.ts, flow.size, flow.direction, flow.flags, flow.payload_len)
    )


# -- per-flow packet cap ---------------------------------------------------------------------


def test_max_packets_cuts_a_flow_and_the_next_continues_it() -> None:
    table = FlowTable(FlowConfig(max_packets=4))
    pkts = handshake() + [tcp(0.1 + i / 100, i % 2 == 0, 100) for i in range(7)]
    for p in pkts:
        table.add(p)
    table.flush()
    flows = table.pop_ended()
    assert [f.packets for f in flows] == [4, 4, 2]
    assert [f.end_reason for f in flows] == ["packets", "packets", "end"]
    assert table.stats.packet_capped == 2 and table.stats.ended["packets"] == 2
    # the continuation keeps the client and server of the flow it continues, even though
    # its first packet goes server -> client and carries no SYN
    for f in flows:
        assert (f.key.client, f.key.client_port, f.key.server, f.key.server_port) == (
            CLIENT,
            50000,
            SERVER,
            443,
        )
    assert list(flows[1].direction)[:2] == [DOWN, UP]
    assert sum(f.packets for f in flows) == len(pkts)
    assert flows[1].first_ts == pkts[4].ts


def test_max_packets_counts_resegmented_entries() -> None:
    table = FlowTable(FlowConfig(max_packets=10, resegment_mss=1000))
    big = tcp(0.1, False, 8000)  # 8 entries after resegmentation
    for p in [*handshake(), big, big, big]:
        table.add(p)
    table.flush()
    flows = table.pop_ended()
    # the cap is checked before a packet: its pieces stay together, so a flow holds at
    # most max_packets + pieces - 1 entries
    assert [f.packets for f in flows] == [11, 16]
    assert [f.end_reason for f in flows] == ["packets", "end"]
    assert table.stats.packet_capped == 1


def test_max_packets_config_is_checked_and_can_be_off() -> None:
    with pytest.raises(ValueError):
        FlowConfig(max_packets=0)
    assert FlowConfig().max_packets == 1_000_000
    table = FlowTable(FlowConfig(max_packets=None))
    for i in range(3000):
        table.add(tcp(i * 1e-3, True, 10))
    assert len(table) == 1 and next(table.active_flows()).packets == 3000


def test_one_flow_of_a_million_packets_stays_bounded() -> None:
    cap = 100_000
    table = FlowTable(FlowConfig(max_packets=cap), plugins=[NamesPlugin()])
    n = 1_000_000
    base = _rss_mib()
    worst_entries = 0
    worst_bytes = 0
    start = time.process_time()
    half = 0.0
    for i in range(n):
        up = i % 3 == 2
        table.add(
            Packet(
                ts=1e9 + i * 1e-5,
                wire_len=1514,
                ip_len=1500,
                version=4,
                src=CLIENT if up else SERVER,
                dst=SERVER if up else CLIENT,
                proto=TCP,
                sport=50000 if up else 443,
                dport=443 if up else 50000,
                tcp_flags=SYN if i == 0 else ACK,
                seq=i,
                payload_len=1460,
                payload=b"",
            )
        )
        if i % 50_000 == 0:
            flow = next(table.active_flows())
            worst_entries = max(worst_entries, flow.packets)
            worst_bytes = max(worst_bytes, _entry_bytes(flow))
            table.pop_ended()
        if i == n // 2:
            half = time.process_time() - start
    total = time.process_time() - start
    growth = _rss_mib() - base
    assert table.stats.packet_capped == n // cap - 1
    assert worst_entries <= cap
    # 26 bytes of columns per entry, arrays over-allocate by at most 1/8 + a bit
    assert worst_bytes <= cap * 26 * 1.2
    # uncapped, the flow alone would hold ~25 MiB of columns
    assert growth < 12, f"RSS grew {growth:.1f} MiB"
    # no slowdown as the capture goes on (CPU time, so other load on the machine does not
    # count; quadratic work would make the second half ~3x the first)
    assert total - half < 2.2 * half, (half, total)


# -- many flows --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["syn", "udp"])
def test_flood_of_distinct_flows_is_held_to_max_flows(tmp_path: Path, kind: str) -> None:
    n, cap = 200_000 if kind == "syn" else 60_000, 20_000
    path = tmp_path / f"{kind}.pcap"
    (write_syn_flood if kind == "syn" else write_udp_scan)(path, n)
    table = FlowTable(FlowConfig(max_flows=cap), plugins=[NamesPlugin()])
    rss_at: dict[int, float] = {}
    times: dict[int, float] = {}
    start = time.process_time()
    i = 0
    for i, pkt in enumerate(open_capture(path), 1):
        table.add(pkt)
        if i % 4096 == 0:
            table.pop_ended()  # live mode drops ended flows as it goes
        if i in (2 * cap, n // 2, n):
            rss_at[i] = _rss_mib()
            times[i] = time.process_time() - start
    assert i == n
    st = table.stats
    assert len(table) == cap and st.peak_flows == cap
    assert st.flows == n and st.evicted == n - cap
    # once the table is full, more flows cost no more memory
    assert rss_at[n] - rss_at[2 * cap] < 12, rss_at
    # linear: the second half costs about what the first did (CPU time; quadratic ~3x)
    first = times[n // 2]
    assert times[n] - first < 2.2 * first, times


def test_featurize_flood_reports_evictions_and_keeps_every_flow(tmp_path: Path) -> None:
    n, cap = 2_500, 500
    path = tmp_path / "syn.pcap"
    write_syn_flood(path, n)
    out = tmp_path / "out.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "classifier.cli",
            "featurize",
            str(path),
            "-o",
            str(out),
            "-q",
            "--max-flows",
            str(cap),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{n} flows, {n - cap} evicted (flow cap), {n} rows" in proc.stderr
    table = pd.read_parquet(out)
    assert len(table) == n
    assert (table["end_reason"] == "evicted").sum() == n - cap
    assert set(table["packets"]) == {1}


def test_featurize_builds_the_table_in_chunks_without_changing_it(tmp_path: Path) -> None:
    # More rows than one chunk (512): the concatenated table equals the one-shot table.
    path = tmp_path / "udp.pcap"
    write_udp_scan(path, 2_100)
    config = FeaturizeConfig(flow=FlowConfig(max_flows=300), snapshots=())
    stats = FeaturizeStats()
    chunked = featurize(path, config, stats=stats)
    whole = pd.DataFrame(
        list(featurize_packets(open_capture(path), config, capture=path.name)),
        columns=row_columns(config),
    )
    assert stats.rows == len(chunked) == 2_100
    pd.testing.assert_frame_equal(chunked, whole)


def test_long_flow_capture_through_featurize(tmp_path: Path) -> None:
    path = tmp_path / "long.pcap"
    write_long_flow(path, 30_000)
    config = FeaturizeConfig(flow=FlowConfig(max_packets=10_000), snapshots=())
    stats = FeaturizeStats()
    table = featurize(path, config, stats=stats)
    assert list(table["end_reason"]) == ["packets", "packets", "end"]
    assert list(table["packets"]) == [10_000, 10_000, 10_000]
    assert stats.table.packet_capped == 2
    assert (table["client"] == "10.77.1.2").all() and (table["server_port"] == 443).all()


def test_featurize_cli_packet_cap_option(tmp_path: Path) -> None:
    path = tmp_path / "long.pcap"
    write_long_flow(path, 25_000)
    out = tmp_path / "out.csv"
    base = [
        sys.executable,
        "-m",
        "classifier.cli",
        "featurize",
        str(path),
        "-o",
        str(out),
        "-q",
        "--snapshots",
        "3",
    ]
    proc = subprocess.run(
        [*base, "--max-packets", "10000"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 flows, 2 cut at the packet cap, 3 rows" in proc.stderr
    assert list(pd.read_csv(out)["packets"]) == [10_000, 10_000, 5_000]
    proc = subprocess.run(
        [*base, "--max-packets", "-3"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "shortflow: error: bad flow option: max_packets must be at least 1"
    ]
