"""Live mode judges flows without pandas (LiveRouter._judge_flows on verdict_arrays): on
real packets its verdicts are the ones classify_table gives on the same rows."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from classifier.capture.reader import open_capture
from classifier.features.schema import FEATURE_COLUMNS, compute_features
from classifier.features.view import FlowView
from classifier.flows import Flow
from classifier.model.predict import classify_table
from tests.packets import CLIENT, SERVER, downloads, replay, to_server

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"
ACTED_ON = (
    "label",
    "probability",
    "p_short_form",
    "service",
    "category",
    "name",
    "decision_window",
    "reason",
)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _missing_as_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


@pytest.mark.skipif(os.geteuid() != 0, reason="a live router opens an AF_PACKET socket (root)")
def test_live_flow_verdicts_match_classify_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample capture replayed twice with a fake clock: every flow verdict the live
    loop acts on has the values classify_table gives on the rows the loop used to build
    (a DataFrame of flow meta, features and window per judged flow)."""
    from classifier.live.router import LiveConfig, LiveRouter

    packets = list(open_capture(SAMPLE))
    clock = Clock(packets[0].ts)
    router = LiveRouter(
        LiveConfig(ifaces=("lo",), summary_every=0, audit_log=tmp_path / "audit.jsonl"),
        clock=clock,
    )
    expected: list[dict[str, Any]] = []
    acted: list[dict[str, Any]] = []
    judge, act = router._judge_flows, router._act

    def judge_both(due: list[tuple[Flow, float]]) -> None:
        rows = []
        for flow, end in due:
            start = 0.0 if end <= router.config.checks[-1] else end - router.config.recheck
            row = router.featurizer.flow_meta(flow)
            row.update(
                zip(FEATURE_COLUMNS, compute_features(FlowView.of(flow, start, end)), strict=True)
            )
            row["window_start"], row["window_end"] = start, end
            rows.append(row)
        table = classify_table(router.model, pd.DataFrame(rows))
        expected.extend(table[list(ACTED_ON)].to_dict("records"))
        judge(due)

    def act_recorded(flow: Flow, verdict: dict[str, Any]) -> None:
        acted.append(dict(verdict))
        act(flow, verdict)

    monkeypatch.setattr(router, "_judge_flows", judge_both)
    monkeypatch.setattr(router, "_act", act_recorded)
    try:
        replay(router.process, clock, packets, 2)
        clock.t += 120
        router.process([])
    finally:
        router.close()
    assert len(acted) == len(expected) >= 10
    assert {v["decision_window"] for v in acted} > {"0-1 s"}  # first checks and rechecks
    assert any(v["name"] for v in acted) and any(v["service"] != "unknown" for v in acted)
    for got, want in zip(acted, expected, strict=True):
        assert set(got) == set(ACTED_ON)
        assert got == {k: _missing_as_none(v) for k, v in want.items()}
        assert all(type(got[k]) is str for k in ("label", "service", "category", "reason"))
        assert type(got["probability"]) is float and type(got["p_short_form"]) is float


def _state(tmp: Path) -> Any:
    from classifier.enforce.audit import AuditLog
    from classifier.enforce.enforcer import Enforcer
    from classifier.enforce.policy import PolicyHolder, parse_policy
    from classifier.live.state import LiveState

    clock = Clock(100.0)
    holder = PolicyHolder(initial=parse_policy({"mode": "dry-run"}, "test"))
    enforcer = Enforcer(
        "dry-run", None, AuditLog(tmp / "audit.jsonl", fsync=False), holder, clock=clock
    )
    return LiveState(enforcer, holder, clock=clock)


def _verdict(label: str, at: float, reason: str = "traffic shape: x") -> dict[str, Any]:
    return {
        "label": label,
        "probability": 0.75,
        "p_short_form": 0.1,
        "service": "youtube",
        "name": "r1.googlevideo.com",
        "window": "0-3 s",
        "reason": reason,
        "at": at,
        "flow_start": 90.0,
    }


def test_flows_read_back_as_given_from_the_compact_store(tmp_path: Path) -> None:
    """LiveState keeps a flow's verdicts as tuples (the first one only once a later one
    differs) and its key as a tuple; flows() gives back the dicts it was given, new ones
    on each call, for router-shaped verdicts and any other mapping alike."""
    state = _state(tmp_path)
    key = ("udp", "10.0.0.2", 40000, "10.0.0.9", 443)
    state.update_flow(key, _verdict("other", 1.0))
    (once,) = state.flows()
    assert once["key"] == dict(
        proto="udp", client="10.0.0.2", client_port=40000, server="10.0.0.9", server_port=443
    )
    assert once["verdict"] == once["first_verdict"] == _verdict("other", 1.0)
    assert once["verdict"] is not once["first_verdict"] and once["verdicts"] == 1
    once["verdict"]["label"] = "changed"
    assert state.flows()[0]["verdict"]["label"] == "other"
    state.update_flow(once["key"], _verdict("other", 1.0))  # the same key as a dict
    state.update_flow(key, _verdict("short-form", 4.0, "traffic shape: y"))
    state.update_flow(key, _verdict("long-form", 9.0))
    (flow,) = state.flows()
    assert flow["verdicts"] == 4
    assert flow["first_verdict"] == _verdict("other", 1.0)
    assert flow["verdict"] == _verdict("long-form", 9.0)
    odd = {"label": "other", "probability": float("nan"), "extra": [1, 2]}
    state.update_flow({"client": "a", "server": "b"}, odd)
    newest = state.flows()[0]
    assert newest["key"] == {"client": "a", "server": "b"}
    assert newest["verdict"] == {"label": "other", "probability": None, "extra": [1, 2]}
    assert state.remove_flow(key) and state.flow_count() == 1
    ended = state.flows()[-1]
    assert ended["ended"] and ended["ended_at"] == 100.0 and ended["verdicts"] == 4
    assert ended["verdict"] == _verdict("long-form", 9.0)
    assert state.label_counts()["flow"] == {"other": 3, "short-form": 1, "long-form": 1}


_LEAN_LIVE = """
import dataclasses, sys
from pathlib import Path
from classifier.capture.reader import open_capture
from classifier.live.router import LiveConfig, LiveRouter
from classifier.model.lean import LeanForest, LeanSession

class Clock:
    t = 0.0
    def __call__(self):
        return self.t

packets = list(open_capture(Path(sys.argv[1])))
clock = Clock()
clock.t = packets[0].ts
router = LiveRouter(
    LiveConfig(ifaces=("lo",), summary_every=0, audit_log=Path(sys.argv[2])), clock=clock
)
try:
    assert isinstance(router.model.predictor, LeanForest)
    assert isinstance(router.session_model.estimator, LeanSession)
    for i in range(2):
        for pkt in packets:
            clock.t = pkt.ts + 30.1 * i
            router.process([dataclasses.replace(pkt, ts=clock.t)])
    clock.t += 11
    router.process([])
    counters = router.state.counters_snapshot()
finally:
    router.close()
print(counters["verdicts"], counters["session_verdicts"])
print(" ".join(m for m in ("pandas", "sklearn", "scipy", "lightgbm", "joblib") if m in sys.modules))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a live router opens an AF_PACKET socket (root)")
def test_live_mode_judges_without_pandas_or_scikit_learn(tmp_path: Path) -> None:
    """The shipped model's lean exports decide in live mode: a router that judged flows
    and sessions on real packets, in a fresh process, never imported pandas,
    scikit-learn, scipy, lightgbm or joblib (~160 MiB of a router's memory)."""
    import subprocess
    import sys

    from classifier.compiled import aot_status

    if aot_status() != "aot":  # numba's just-in-time compiler imports scipy
        pytest.skip("the ahead-of-time kernels are not built for these sources (make kernels)")
    proc = subprocess.run(
        [sys.executable, "-c", _LEAN_LIVE, str(SAMPLE), str(tmp_path / "audit.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    flows, sessions = (int(x) for x in lines[0].split())
    assert flows > 0 and sessions > 0, lines
    assert lines[1:] in ([], [""]), f"imported: {lines[1:]}"


@pytest.mark.skipif(os.geteuid() != 0, reason="a live router opens an AF_PACKET socket (root)")
def test_a_session_block_spares_the_flows_whose_server_name_the_policy_allows(
    tmp_path: Path,
) -> None:
    """A short-form YouTube session over two connections; the policy allows one's server
    name. The block covers the other only, also when the allowed one is the larger (the
    vote goes with the first flow that can be blocked)."""
    from classifier.live.router import LiveConfig, LiveRouter

    policy = tmp_path / "policy.toml"
    policy.write_text(
        'mode = "dry-run"\n[agreement]\nk = 1\nn = 1\nthreshold = 0.5\n'
        '[allow]\nnames = ["rr2---sn-lab.googlevideo.com"]\n'
    )
    kept = downloads(50001, range(0, 10), "rr1---sn-lab.googlevideo.com")
    allowed = to_server("10.77.2.3", downloads(50002, range(0, 20), "rr2---sn-lab.googlevideo.com"))
    packets = sorted(kept + allowed, key=lambda p: p.ts)
    clock = Clock(packets[0].ts)
    router = LiveRouter(
        LiveConfig(ifaces=("lo",), summary_every=0, audit_log=tmp_path / "a.jsonl", policy=policy),
        clock=clock,
    )
    try:
        replay(router.process, clock, packets, 1)
        # the larger (allowed) connection first, as live mode orders a group's media flows
        flows = sorted(router.featurizer.table.active_flows(), key=lambda f: -f.wire_bytes)
        assert [f.key.server for f in flows] == ["10.77.2.3", SERVER]
        assert [router.featurizer.flow_meta(f)["service"] for f in flows] == ["youtube"] * 2
        records = router._block_session(CLIENT, "youtube", flows, 0.95)
        assert [(r.client, r.server, r.name) for r in records] == [(CLIENT, SERVER, "youtube")]
        assert [r.server for r in router.enforcer.active_blocks()] == [SERVER]
    finally:
        router.close()
