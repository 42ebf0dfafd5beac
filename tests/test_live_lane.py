"""Live mode's fast lane gives the flow table exactly what adding every packet does.

Real captures are read into column batches (as a live source decodes them) and fed both
ways: each packet built and added (the reference), and through :class:`FastLane`. Flows
(packets, columns, counters, close state, end reasons, names), the order in which they
ended and are held, the table's counters and the session view's windows must be equal.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from classifier.capture.live_fast import PacketBuilder
from classifier.capture.reader_fast import iter_chunks
from classifier.features.featurize import FeaturizeConfig, Featurizer
from classifier.features.session import SessionConfig
from classifier.flows import Flow, FlowConfig
from classifier.live.lane import FastLane
from classifier.live.sessions import SessionTracker
from classifier.names.plugin import flow_names
from tests.shared_data import SHARED, needs_files
from training.netpkt import read_netpkt, write_netpkt_pcap

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"
SHORTS = "traces/netpkt/netpkt_youtube_packets_03.txt.gz"
NAMED = ("ndpi/youtube_quic.pcap", "ndpi/chrome.pcap", "ndpi/dns.pcap", "nfstream/instagram.pcap")
REQUET = "requet/A_baseline_Jan17_exp_41.pcap"

LIVE = FlowConfig(idle_timeout=60.0, max_flows=200_000)
# small limits, so eviction, the packet cap, resegmenting and frequent sweeps all happen
TIGHT = FlowConfig(
    idle_timeout=5.0, max_flows=40, max_packets=60, resegment_mss=536, sweep_interval=0.5
)


def _run(capture: Path, config: FlowConfig, lane: bool, batch: int) -> dict[str, Any]:
    """Feed ``capture`` in batches of ``batch`` packets; after each batch sweep at its
    last time and take the session windows, as live mode's loop does."""
    holder: dict[str, Featurizer] = {}
    tracker = SessionTracker(SessionConfig(), lambda flow: holder["f"].flow_meta(flow))
    featurizer = holder["f"] = Featurizer(
        FeaturizeConfig(flow=config, snapshots=()), capture="live", plugins=[tracker]
    )
    table = featurizer.table
    fast = FastLane(table, PacketBuilder()) if lane else None
    builder = PacketBuilder()
    flows: dict[int, Flow] = {}
    ended: list[int] = []
    windows: list[str] = []
    for chunk in iter_chunks(capture, max_packets=batch):
        arrays = SimpleNamespace(
            ts=np.ascontiguousarray(chunk.ts), cols=np.ascontiguousarray(chunk.cols)
        )
        k = len(chunk)
        view = memoryview(chunk.buffer)
        if fast is not None:
            fast.take(arrays, k, view)
        else:
            packets: list[Any] = []
            builder.build(arrays, k, view, packets)
            for pkt in packets:
                table.add(pkt)
        for flow in table.active_flows():
            flows[flow.flow_id] = flow
        now = float(arrays.ts[k - 1])
        table.sweep(now)
        ended += [flow.flow_id for flow in table.pop_ended()]
        windows.append(repr(tracker.windows(now)))
    held = [flow.flow_id for flow in table.active_flows()]
    table.flush()
    ended += [flow.flow_id for flow in table.pop_ended()]
    return {
        "flows": {fid: _describe(flow, featurizer) for fid, flow in sorted(flows.items())},
        "ended": ended,
        "held": held,
        "stats": repr(table.stats),
        "windows": windows,
        "fast": fast.fast_packets if fast is not None else 0,
        "packets": table.stats.packets,
    }


def _describe(flow: Flow, featurizer: Featurizer) -> tuple[Any, ...]:
    return (
        flow.key,
        flow.first_ts,
        flow.last_ts,
        flow.packets,
        flow.payload_packets,
        flow.wire_bytes,
        (flow.fin_up, flow.fin_down, flow.rst, flow.end_reason),
        (flow.ts, flow.size, flow.direction, flow.flags, flow.payload_len),
        flow_names(flow, featurizer.names.cache),
        sorted(flow.ext or {}),
    )


def _equal_both_ways(capture: Path, config: FlowConfig, batch: int) -> dict[str, Any]:
    want = _run(capture, config, lane=False, batch=batch)
    got = _run(capture, config, lane=True, batch=batch)
    assert got["packets"] == want["packets"]
    for key in ("stats", "held", "ended", "windows"):
        assert got[key] == want[key], key
    assert got["flows"].keys() == want["flows"].keys()
    for fid, flow in want["flows"].items():
        assert got["flows"][fid] == flow, fid
    return got


@pytest.mark.parametrize("config", [LIVE, TIGHT], ids=["live", "tight"])
def test_lane_equals_packet_by_packet_on_the_sample(config: FlowConfig) -> None:
    got = _equal_both_ways(SAMPLE, config, batch=97)
    assert got["fast"] > 0


@needs_files(SHORTS)
@pytest.mark.parametrize("config", [LIVE, TIGHT], ids=["live", "tight"])
def test_lane_equals_packet_by_packet_on_real_shorts(config: FlowConfig, tmp_path: Path) -> None:
    """Five minutes of real YouTube Shorts (QUIC and TCP, header-only): most packets
    belong to a few long flows and take the lane."""
    packets, _ = read_netpkt(SHARED / SHORTS)
    capture = tmp_path / "shorts.pcap"
    write_netpkt_pcap(packets, capture)
    got = _equal_both_ways(capture, config, batch=1000)
    if config is LIVE:
        assert got["fast"] > 0.9 * got["packets"], got["fast"]


@needs_files(REQUET, *NAMED)
@pytest.mark.parametrize("name", [REQUET, *NAMED])
def test_lane_equals_packet_by_packet_on_named_captures(name: str) -> None:
    """TLS, QUIC and DNS captures: names come from the packets the lane leaves to the
    table, and DNS flows never take it."""
    for config in (LIVE, TIGHT):
        _equal_both_ways(SHARED / name, config, batch=256)
