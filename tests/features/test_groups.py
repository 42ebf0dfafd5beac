"""Every feature group on hand-made packet sequences with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.features.bursts import Bursts
from classifier.features.schema import FEATURE_COLUMNS, compute_features
from classifier.features.splt import Splt
from classifier.features.view import FlowView
from classifier.features.volume import InterArrival, Sizes, TcpFlags, Throughput, Volume
from classifier.flows import FlowConfig, FlowTable
from tests.packets import ACK, PSH, handshake, tcp


def _flow(packets, config=None):
    table = FlowTable(config or FlowConfig())
    for p in packets:
        table.add(p)
    table.flush()
    (flow,) = table.pop_ended()
    return flow


def _named(group, view):
    return dict(zip(group.columns, group.compute(view), strict=True))


@pytest.fixture()
def simple():
    # t=0.00 SYN up 40B, 0.01 SYN/ACK down 40B, 0.02 ACK up 40B,
    # 0.10 req up 140B (100 payload), 0.20 down 1040B, 0.40 down 1040B
    return _flow(
        handshake()
        + [tcp(0.10, True, 100, ACK | PSH), tcp(0.20, False, 1000), tcp(0.40, False, 1000)]
    )


def test_volume(simple):
    v = _named(Volume(), FlowView.of(simple))
    assert v["duration"] == pytest.approx(0.40)
    assert (v["pkts_up"], v["pkts_down"]) == (3, 3)
    assert (v["bytes_up"], v["bytes_down"]) == (220, 2120)
    assert (v["payload_up"], v["payload_down"]) == (100, 2000)
    assert v["down_up_byte_ratio"] == pytest.approx(2120 / 220)
    assert v["pkts_per_s"] == pytest.approx(6 / 0.4)


def test_sizes(simple):
    s = _named(Sizes(), FlowView.of(simple))
    assert (s["size_up_min"], s["size_up_max"]) == (40, 140)
    assert s["size_up_mean"] == pytest.approx(220 / 3)
    assert s["size_down_p50"] == 1040
    assert s["size_down_std"] == pytest.approx(np.std([40, 1040, 1040]))


def test_inter_arrival(simple):
    s = _named(InterArrival(), FlowView.of(simple))
    # up times 0, .02, .10 -> iats .02 .08 ; down .01 .20 .40 -> .19 .20
    assert s["iat_up_min"] == pytest.approx(0.02)
    assert s["iat_up_max"] == pytest.approx(0.08)
    assert s["iat_down_mean"] == pytest.approx(0.195)
    assert s["iat_all_max"] == pytest.approx(0.20)


def test_throughput_and_flags(simple):
    t = _named(Throughput(), FlowView.of(simple))
    assert t["down_bytes_first_1s"] == 2120 and t["up_bytes_first_1s"] == 220
    f = _named(TcpFlags(), FlowView.of(simple))
    assert (f["flag_syn"], f["flag_ack"], f["flag_psh"], f["flag_fin"]) == (2, 5, 1, 0)


def test_splt(simple):
    s = _named(Splt(4), FlowView.of(simple))
    assert [s[f"splt_size_{i}"] for i in range(4)] == [40, -40, 40, 140]
    assert [round(s[f"splt_iat_{i}"], 6) for i in range(4)] == [0, 0.01, 0.01, 0.08]
    short = _named(Splt(8), FlowView.of(simple))
    assert short["splt_size_7"] == 0 and short["splt_size_5"] == -1040


def _segment_flow(coalesce: bool):
    """Two 'segments' of 100 x 1448 payload bytes, 5 s apart, each after a 300 B request.
    With coalesce, the receiver's GRO merged up to 44 segments into one ~64 KB "packet"
    stamped when the last of them arrived."""
    pkts = handshake()
    for start in (1.0, 6.0):
        pkts.append(tcp(start, True, 300, ACK | PSH))
        times = [start + 0.05 + i * 0.002 for i in range(100)]
        chunk = 44 if coalesce else 1
        for i in range(0, 100, chunk):
            part = times[i : i + chunk]
            pkts.append(tcp(part[-1], False, 1448 * len(part)))
    return pkts


def test_bursts_by_hand():
    b = _named(Bursts(gap=0.5), FlowView.of(_flow(_segment_flow(False))))
    assert b["burst_count"] == 2
    assert b["burst_bytes_mean"] == 100 * 1448 and b["burst_bytes_cv"] == 0
    assert b["burst_gap_max"] == pytest.approx(5.0 - 99 * 0.002, abs=1e-9)
    assert b["req_bytes_mean"] == 300 and b["req_count"] == 2
    assert b["first_burst_bytes"] == 100 * 1448


def test_byte_based_bursts_survive_segmentation_offload():
    """GRO/TSO captures: burst features agree; re-segmentation restores packet counts."""
    normal = FlowView.of(_flow(_segment_flow(False)))
    gro = FlowView.of(_flow(_segment_flow(True)))
    bn, bg = _named(Bursts(), normal), _named(Bursts(), gro)
    for col in (
        "burst_count",
        "burst_bytes_mean",
        "burst_bytes_max",
        "req_bytes_mean",
        "first_burst_bytes",
    ):
        assert bn[col] == bg[col], col
    # gaps shift by at most the time one GRO packet spans (here 86 ms of 4.8 s)
    assert bn["burst_gap_mean"] == pytest.approx(bg["burst_gap_mean"], rel=0.02)
    # packet-size statistics do NOT survive offload as they are...
    assert _named(Sizes(), gro)["size_down_max"] > 60000
    # ...but with re-segmentation they match the MTU-sized capture
    reseg = FlowView.of(_flow(_segment_flow(True), FlowConfig(resegment_mss=1448)))
    assert _named(Volume(), reseg)["pkts_down"] == _named(Volume(), normal)["pkts_down"]
    assert _named(Sizes(), reseg)["size_down_max"] == _named(Sizes(), normal)["size_down_max"]


def test_snapshot_view_only_sees_first_seconds():
    flow = _flow(_segment_flow(False))
    early = dict(zip(FEATURE_COLUMNS, compute_features(FlowView.of(flow, 0.0, 3.0)), strict=True))
    whole = dict(zip(FEATURE_COLUMNS, compute_features(FlowView.of(flow)), strict=True))
    assert early["burst_count"] == 1 and whole["burst_count"] == 2
    assert early["duration"] == 3.0 < whole["duration"]


def test_window_view_is_relative_to_its_start():
    flow = _flow(_segment_flow(False))
    w = FlowView.of(flow, 5.0, 10.0)
    assert len(w) == 101 and w.t.min() >= 0 and w.t.max() < 5.0


def test_empty_view_gives_zeros():
    flow = _flow(handshake())
    vals = compute_features(FlowView.of(flow, 100.0, 110.0))
    assert len(vals) == len(FEATURE_COLUMNS) and not any(vals)
