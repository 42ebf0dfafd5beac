"""Session rows, labels, simulated sessions, leave-one-source-out and the session model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifier.enforce.policy import Policy
from classifier.errors import ModelError
from classifier.features.session import SESSION_FEATURES, SessionConfig, session_table
from classifier.model.session_model import (
    Agreement,
    agreed,
    classify_sessions,
    load_session_model,
    pending,
    pending_text,
    save_session_model,
    short_form_votes,
    verdicts,
)
from tests.shared_data import SHARED, needs_files
from training.sessions import (
    CANDIDATES,
    leave_one_source_out,
    realism_auc,
    session_labels,
    sim_to_real,
    simulated_rows,
    source_name,
    source_scores,
    under_block,
)
from training.simulate import SIM_KINDS, simulate

REPO = Path(__file__).resolve().parents[2]


def test_simulation_is_deterministic_and_labelled() -> None:
    label, a = simulate("shorts", 3)
    _, b = simulate("shorts", 3)
    _, c = simulate("shorts", 4)
    assert label == "short-form"
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert {simulate(k, 0)[0] for k in SIM_KINDS} == {"short-form", "long-form", "other"}


def test_simulated_players_differ_in_connection_churn() -> None:
    config = SessionConfig()
    short = pd.concat([session_table(simulate("shorts", i)[1], config) for i in range(5)])
    long_ = pd.concat([session_table(simulate("long", i)[1], config) for i in range(5)])
    assert short["new_media_flows"].mean() > 2 * long_["new_media_flows"].mean()
    assert short["top_flow_share"].median() < long_["top_flow_share"].median()


def test_simulated_shorts_move_to_a_new_connection_every_few_clips() -> None:
    # A clip is watched for at most 60 s and a connection carries at most four clips, so
    # no simulated Shorts session goes five minutes on one media connection.
    for seed in range(20):
        _, rows = simulate("shorts", seed, duration=300)
        flows = rows.groupby("flow_id").agg(
            opened=("first_ts", "first"), down=("bytes_down", "sum")
        )
        opened = flows[flows["down"] >= 300_000]["opened"].sort_values().to_list()
        end = rows["first_ts"].min() + 300
        assert len(opened) >= 2, seed
        assert max(b - a for a, b in zip(opened, [*opened[1:], end], strict=True)) <= 250, seed


def test_simulated_shorts_let_the_buffer_drain_before_fetching_again() -> None:
    # Between its two watermarks the player stays idle, so the windows in which a
    # simulated Shorts session moves a clip's worth (1 MB) are busy about a third of the
    # time (median); a player that fetched whenever it was below its goal kept them busy
    # 42 % of the time.
    config = SessionConfig()
    windows = pd.concat([session_table(simulate("shorts", i)[1], config) for i in range(20)])
    busy = windows[windows["window_bytes"] >= 1_000_000]["active_share"]
    assert len(busy) > 500
    assert busy.median() < 0.38


def test_simulated_links_reach_home_broadband_speeds() -> None:
    # A bulk download runs at 20-100 % of its session's link (5-300 Mbit/s): no second of
    # one goes above 300 Mbit/s, and links faster than 60 Mbit/s are common.
    peaks = []
    for seed in range(40):
        _, rows = simulate("bulk", seed, duration=300)
        per_flow = rows.groupby("flow_id")["bytes_down"]
        downloads = per_flow.sum()[lambda down: down > 5_000_000].index
        peaks.append(per_flow.max()[downloads].max() * 8 / 1e6)
    assert max(peaks) <= 300
    assert sum(peak > 60 for peak in peaks) >= 10


def _sessions(groups: list[str], window_bytes: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"group": groups, "window_bytes": window_bytes, "bytes_step": window_bytes})


def test_labels_follow_the_capture_and_the_media_group() -> None:
    s = _sessions(["youtube", "youtube", "google", "net:10.0.0.0/24"], [5e6, 2e5, 5e6, 5e6])
    assert session_labels(s, "short-form", "youtube").tolist() == [
        "short-form",
        None,
        "other",
        None,
    ]
    assert session_labels(s, "web", "firefox").tolist() == ["other"] * 4
    assert session_labels(s, "mixed", "instagram").tolist() == [None] * 4
    nameless = _sessions(["net:1.1.1.0/24", "net:2.2.2.0/24"], [9e6, 2e6])
    nameless = pd.concat([nameless] * 1 + [_sessions(["net:2.2.2.0/24"], [1e4])] * 30)
    assert session_labels(nameless, "long-form", "youtube").tolist()[:2] == [
        "long-form",
        "long-form",
    ]
    tiny = _sessions(["net:1.1.1.0/24", "net:2.2.2.0/24"], [9e7, 1.5e6])
    assert session_labels(tiny, "long-form", "youtube").tolist() == ["long-form", None]


def test_sources_are_named_from_paths() -> None:
    assert source_name(Path("x/netpkt_youtube_packets_03.pcap"), "") == "netpkt"
    assert source_name(Path("../shared/pcaps/requet/A_baseline_Jan17_exp_41.pcap"), "") == (
        "requet"
    )
    assert source_name(Path("a/b.pcap"), "lab") == "lab"
    assert source_name(Path("home/phone.pcap"), "tcpdump") == "household"


def _table() -> pd.DataFrame:
    sim = simulated_rows(3, seed=1)
    real = sim[sim["app"].isin(["shorts", "long", "web"])].copy()
    real["source"] = np.where(real["app"] == "web", "b", "a")
    real["capture_id"] = "real-" + real["capture_id"]
    return pd.concat([sim, real], ignore_index=True)


def test_leave_one_source_out_holds_each_source_out() -> None:
    table = _table()
    preds = leave_one_source_out(table, CANDIDATES["logreg"])
    assert sorted(preds["source"].unique()) == ["a", "b"]
    assert len(preds) == int((table["source"] != "sim").sum())
    assert set(preds["verdict"]) <= {"short-form", "long-form", "other"}
    scores = source_scores(preds).set_index("source")
    assert np.isnan(scores.loc["b", "short_detected"])
    assert 0 <= scores.loc["a", "short_detected"] <= 1
    transfer = sim_to_real(table, CANDIDATES["logreg"])
    assert transfer is not None and set(transfer["source"]) == {"a", "b"}
    assert len(transfer) == len(preds)
    assert sim_to_real(table[table["source"] == "sim"], CANDIDATES["logreg"]) is None
    leaky = table.copy()
    leaky.loc[leaky["source"] == "b", "capture_id"] = leaky.loc[
        leaky["source"] == "a", "capture_id"
    ].iloc[0]
    with pytest.raises(AssertionError, match="both sides"):
        leave_one_source_out(leaky, CANDIDATES["logreg"])


def test_slow_windows_neither_vote_nor_lead_in() -> None:
    """Windows under ``MIN_VOTE_MBPS`` do not vote, and with hindsight neither join a run
    by reaching the threshold before it nor lead into it; a run that holds goes on over a
    slow window, as live mode's last-n rule does."""
    rule = Agreement(k=3, n=5, threshold=0.8)
    keys = pd.DataFrame({"client": ["a"] * 6, "group": ["yt"] * 6})
    p = pd.Series([0.6, 0.9, 0.9, 0.9, 0.9, 0.9])
    fast = pd.Series([2.0] * 6)
    slow_first = pd.Series([0.3, 0.3, 2.0, 2.0, 2.0, 0.3])
    assert short_form_votes(p, keys, rule, rate=slow_first).tolist() == [0, 0, 1, 2, 3, 3]
    assert agreed(p, keys, rule, rate=slow_first).tolist() == [False] * 4 + [True, True]
    assert agreed(p, keys, rule, hindsight=True, rate=fast).tolist() == [True] * 6
    late = agreed(p, keys, rule, hindsight=True, rate=slow_first).tolist()
    assert late == [False, False, True, True, True, True]


def test_realism_auc_tells_a_shifted_synthetic_source_from_real() -> None:
    table = _table()
    assert realism_auc(table, "lab") == {}  # no lab rows
    shifted = table.copy()
    shifted.loc[shifted["source"] == "sim", "bursts"] += 100
    assert realism_auc(shifted, "sim") == {"short-form": 1.0, "long-form": 1.0, "other": 1.0}
    assert realism_auc(shifted, "sim", source="b") == {"other": 1.0}  # b holds web only
    assert set(realism_auc(shifted, "sim", source="a")) == {"short-form", "long-form"}


def test_short_form_needs_agreeing_windows_per_session() -> None:
    p = pd.Series([0.9, 0.9, 0.1, 0.9, 0.95, 0.9, 0.9])
    keys = pd.DataFrame({"client": ["a"] * 5 + ["b"] * 2, "group": ["yt"] * 7})
    rule = Agreement(k=3, n=5, threshold=0.8)
    assert agreed(p, keys, rule).tolist() == [False, False, False, True, True, False, False]
    assert short_form_votes(p, keys, rule).tolist() == [1, 2, 2, 3, 4, 1, 2]
    p_short, p_long = np.array([0.9, 0.2, 0.2, 0.5, 0.9]), np.array([0.05, 0.5, 0.2, 0.3, 0.05])
    out = verdicts(np.array([True, False, False, False, False]), p_short, p_long)
    assert out.tolist() == ["short-form", "long-form", "other", "long-form", "long-form"]
    # short-form is pending where it is the likeliest but not agreed; the label stays
    want = [None, None, None, "short-form", "short-form"]
    assert pending(out, p_short, p_long).tolist() == want
    assert pending_text(2, 3) == "short-form likeliest, 2 of 3 windows needed"
    # with hindsight the windows that led up to agreement count too: those that reached
    # the threshold within n - 1 windows before, and those directly before a short-form
    # window that were more likely short-form than not (0.5); never across sessions,
    # never a window under 0.5, never a miss
    p = pd.Series([0.9, 0.5, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    keys = pd.DataFrame({"client": ["a"] * 7 + ["b"] * 3, "group": ["yt"] * 10})
    assert agreed(p, keys, rule).tolist() == [
        False,
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        False,
        True,
    ]
    assert agreed(p, keys, rule, hindsight=True).tolist() == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        True,
        True,
        True,
    ]
    p = pd.Series([0.3, 0.6, 0.7, 0.9, 0.9, 0.9, 0.6, 0.6, 0.6, 0.4, 0.6, 0.9])
    keys = pd.DataFrame({"client": ["a"] * 10 + ["b"] * 2, "group": ["yt"] * 12})
    assert agreed(p, keys, rule, hindsight=True).tolist() == [
        False,  # 0.3: not led in
        True,  # 0.6 and 0.7 lead into the run
        True,
        True,
        True,
        True,
        True,  # 3 of the last 5 still at 0.8
        True,
        False,  # the run ends; no lead-out
        False,
        False,  # client b's 0.6 does not lead into a run: b never agrees
        False,
    ]
    default = Policy.default()
    assert (Agreement().k, Agreement().n, Agreement().threshold) == (
        default.agreement_k,
        default.agreement_n,
        default.threshold,
    )


def test_session_model_round_trip_and_tamper(tmp_path: Path) -> None:
    table = simulated_rows(3, seed=2)
    est = CANDIDATES["logreg"]().fit(table[list(SESSION_FEATURES)], table["label"])
    save_session_model(est, tmp_path, name="t", config=SessionConfig(window=45))
    model = load_session_model(tmp_path)
    assert model.config.window == 45
    rows = table.drop(columns=["label"]).head(30)
    first = classify_sessions(model.estimator, rows)
    assert first["label"].isin(["short-form", "long-form", "other"]).all()
    assert first["reason"].str.contains("media conn").all()
    (tmp_path / "session.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="sha256"):
        load_session_model(tmp_path)
    with pytest.raises(ModelError, match="missing"):
        load_session_model(tmp_path / "nothing")


@needs_files("traces/netpkt/netpkt_working_packets_01.txt.gz")
def test_train_sessions_and_classify_timeline_from_the_cli(tmp_path: Path) -> None:
    """A user imports a real trace, trains a session model and reads a timeline."""
    shortflow = [sys.executable, "-m", "classifier.cli"]
    trace = SHARED / "traces" / "netpkt" / "netpkt_working_packets_01.txt.gz"
    run = subprocess.run(
        [*shortflow, "dataset", "import-trace", str(trace), "--out", str(tmp_path / "t"), "-q"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [
            *shortflow,
            "train-sessions",
            str(tmp_path / "t" / "traces.csv"),
            "--sim",
            "2",
            "-q",
            "-o",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SHORTFLOW_CACHE": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    assert "| netpkt |" in run.stdout and (tmp_path / "m" / "session.json").is_file()
    run = subprocess.run(
        [
            *shortflow,
            "evaluate-sessions",
            str(tmp_path / "t" / "traces.csv"),
            "--sim",
            "2",
            "-q",
            "--candidate",
            "logreg-shape",
            "--flows",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SHORTFLOW_CACHE": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"^per real source: .*other: netpkt [01]\.\d\d", run.stdout, re.M)
    row = next(line for line in run.stdout.splitlines() if line.startswith("| netpkt | other"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "1" and float(cells[3]) > 10  # one capture, its megabytes
    shares = [float(c.rstrip(" %")) for c in cells[4:7]]
    assert sum(shares) == pytest.approx(100.0, abs=0.2)
    pcap = tmp_path / "t" / "netpkt_working_packets_01.pcap"
    run = subprocess.run(
        [*shortflow, "classify", str(pcap), "--no-timeline"], capture_output=True, text=True
    )
    assert run.returncode == 0 and "activity over time" not in run.stdout
    run = subprocess.run(
        [*shortflow, "classify", str(pcap), "--model", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "model.json" in run.stderr  # a session model alone
    run = subprocess.run([*shortflow, "classify", str(pcap)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "activity over time" in run.stdout and "client 192.168.0.100" in run.stdout
    run = subprocess.run(
        [*shortflow, "classify", str(pcap), "--json"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    # media flows are decided by the client's session, the rest by the flow model, and
    # the per-client summary counts the final labels
    assert {f["decided_by"] for f in doc["flows"]} == {"session", "flow"}
    assert all(f["flow_label"] in ("short-form", "long-form", "other") for f in doc["flows"])
    assert doc["clients"][0]["long_form_flows"] == sum(
        f["label"] == "long-form" for f in doc["flows"]
    )


def test_timeline_sidecar_labels_windows_by_interval(tmp_path: Path) -> None:
    """A mixed capture with a timeline: windows take the label of their interval."""
    import shutil

    from classifier.errors import DatasetError
    from classifier.features.featurize_fast import featurize_fast
    from training.manifest import add_row
    from training.sessions import read_timeline, session_rows

    sample = REPO / "datasets" / "samples" / "sample.pcap"
    capture = tmp_path / "mixed.pcap"
    shutil.copy(sample, capture)
    manifest = tmp_path / "m.csv"
    add_row(manifest, capture, "mixed", "youtube")
    with pytest.raises(DatasetError, match="no labelled session windows"):
        session_rows([manifest], cache_dir=tmp_path)  # mixed without a timeline: nothing
    first = float(featurize_fast(sample)["first_ts"].min())
    (tmp_path / "mixed.timeline.json").write_text(
        json.dumps(
            {
                "intervals": [
                    {"start": first, "end": first + 15, "label": "long-form"},
                    {"start": first + 15, "end": first + 600, "label": "web"},
                ]
            }
        )
    )
    assert read_timeline(capture) == [
        (first, first + 15, "long-form"),
        (first + 15, first + 600, "web"),
    ]
    labelled = session_rows([manifest], cache_dir=tmp_path)
    late = labelled[labelled["window_end"] > first + 25]
    assert len(late) > 0 and set(late["label"]) == {"other"}
    early = labelled[labelled["window_end"] <= first + 15]
    assert "long-form" in set(early["label"])
    (tmp_path / "mixed.timeline.json").write_text('{"intervals": [{"start": 1}]}')
    with pytest.raises(DatasetError, match="not a timeline"):
        read_timeline(capture)


def test_under_block_holds_a_session_for_block_seconds_after_each_verdict() -> None:
    # one session judged every 10 s: short-form verdicts at 30 s and 40 s, then at 200 s
    ends = np.arange(10.0, 260.0, 10.0)
    verdict = np.where(np.isin(ends, [30.0, 40.0, 200.0]), "short-form", "long-form")
    preds = pd.DataFrame(
        {"capture_id": "c", "client": "10.77.0.2", "group": "g", "window_end": ends}
    ).assign(verdict=verdict)
    other = preds.assign(group="h", verdict="long-form")  # another session: never blocked
    both = pd.concat([preds, other], ignore_index=True)
    held = under_block(both, block_seconds=60, step=10.0)
    # a step [end - 10, end) is held when a verdict came at or before its start and less
    # than 60 s before it: the verdict's own step is not
    want = ((ends - 10 >= 30) & (ends - 10 < 40 + 60)) | ((ends - 10 >= 200) & (ends - 10 < 260))
    assert held[: len(ends)].tolist() == want.tolist()
    assert not held[len(ends) :].any()
    scores = source_scores(
        both.assign(source="s", label="long-form", bytes_step=1.0), block_seconds=60
    ).set_index("source")
    assert scores.loc["s", "long_as_short"] == pytest.approx(3 / 50)
    assert scores.loc["s", "long_blocked"] == pytest.approx(want.sum() / 50)
    longer = source_scores(
        both.assign(source="s", label="long-form", bytes_step=1.0), block_seconds=300
    ).set_index("source")
    assert longer.loc["s", "long_blocked"] > scores.loc["s", "long_blocked"]
