"""Traffic lab parts that need no namespaces: plans, seeds, manifest, request parsing, CLI."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from classifier.errors import ShortflowError
from training.lab.cli import add_parser, handle
from training.lab.conditions import PROFILES, get_profile
from training.lab.generate import MANIFEST_COLUMNS, session_seed, write_manifest
from training.lab.scenarios import LABELS, SCENARIOS, SessionPlan, plan_session
from training.lab.servers import body_bytes, parse_request
from training.lab.topology import NAMES, LabError

EXPECTED = {"shorts", "reels", "tiktok", "longform", "feed", "web", "call", "mixed"}
ALLOWED_LABELS = {"short-form", "long-form", "other-video", "web", "call", "mixed"}
ALLOWED_APPS = {"youtube", "instagram", "tiktok", "web", "call"}


def test_scenario_names_match_the_brief() -> None:
    assert set(SCENARIOS) == EXPECTED
    assert set(LABELS) == EXPECTED
    assert all(isinstance(v, str) and len(v) > 20 for v in SCENARIOS.values())


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_plan_session_is_a_pure_function_of_its_arguments(scenario: str) -> None:
    a = plan_session(scenario, 1234)
    b = plan_session(scenario, 1234)
    assert a == b
    assert a.to_json() == b.to_json()
    assert SessionPlan.from_json(a.to_json()) == a
    others = {plan_session(scenario, s).to_json() for s in range(1, 6)}
    assert len(others) == 5, "different seeds must give different plans"
    assert a.label in ALLOWED_LABELS and a.app in ALLOWED_APPS
    assert a.label == LABELS[scenario]
    lo, hi = (30, 60) if scenario == "mixed" else (20, 60)
    assert lo <= a.duration_s <= hi
    assert plan_session(scenario, 1234, 17.0).duration_s == 17.0
    assert a.summary()


@pytest.mark.parametrize("scenario", ["shorts", "reels", "tiktok"])
def test_swipe_plans_cover_each_clip_with_contiguous_ranges(scenario: str) -> None:
    for seed in range(20):
        plan = plan_session(scenario, seed, 40)
        clips = plan.params["clips"]
        assert sum(c["dwell_s"] for c in clips) >= 40
        assert 1 <= plan.params["prefetch_depth"] <= 3
        for c in clips:
            assert 5.0 <= c["length_s"] <= 90.0
            assert c["host"] in NAMES
            assert c["chunks"][0][0] == 0 and c["chunks"][-1][1] == c["size"] - 1
            for (_, b), (a2, _) in zip(c["chunks"], c["chunks"][1:], strict=False):
                assert a2 == b + 1
            assert 0.8 <= c["dwell_s"] <= 2 * c["length_s"] + 1e-6
        assert plan.protocol in {"h1", "h2", "h3"}


def test_swipe_dwell_times_are_short_and_some_swipes_are_quick() -> None:
    dwells = [
        c["dwell_s"] for s in range(40) for c in plan_session("shorts", s, 30).params["clips"]
    ]
    dwells.sort()
    assert 3.0 < dwells[len(dwells) // 2] < 15.0
    assert sum(d < 3.0 for d in dwells) / len(dwells) > 0.2


def test_shorts_replace_their_connection_every_few_clips_and_reels_do_not() -> None:
    """A new connection for about a third of the Shorts clips (the real Shorts session
    opened a media connection every ~20 s); Reels and TikTok keep theirs."""
    shorts = [c["new_conn"] for s in range(200) for c in plan_session("shorts", s).params["clips"]]
    assert 0.25 < sum(shorts) / len(shorts) < 0.45
    for kind in ("reels", "tiktok"):
        clips = [c for s in range(10) for c in plan_session(kind, s).params["clips"]]
        assert not any(c["new_conn"] for c in clips)


def test_protocol_mix_follows_the_app() -> None:
    shorts = [plan_session("shorts", s).protocol for s in range(60)]
    tiktok = [plan_session("tiktok", s).protocol for s in range(60)]
    assert shorts.count("h3") > shorts.count("h2") > 0
    assert set(tiktok) <= {"h1", "h2"} and "h1" in tiktok


def test_longform_plan_uses_the_ladder_and_fills_before_on_off() -> None:
    plan = plan_session("longform", 7, 45)
    p = plan.params
    assert 0 <= p["rung"] < len(p["ladder_bps"])
    assert 8 <= p["segment_s"] <= 30 and p["mode"] in {"segment", "watermark"}
    assert max(40, 2 * p["segment_s"]) <= p["fill_target_s"] <= 120
    assert p["low_watermark_s"] <= p["fill_target_s"] - p["segment_s"]
    renewing = [plan_session("longform", s, 45).params["renew_after_s"] for s in range(60)]
    assert 0.25 < sum(r > 0 for r in renewing) / 60 < 0.75
    assert all(r == 0 or 60 <= r <= 400 for r in renewing)
    for t, rung in p["switches"]:
        assert 0 < t < 45 and 0 <= rung < len(p["ladder_bps"])


def test_mixed_segments_tile_the_session_and_include_short_form() -> None:
    for seed in range(30):
        plan = plan_session("mixed", seed, 40)
        segs = plan.params["segments"]
        assert segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(40.0)
        for a, b in zip(segs, segs[1:], strict=False):
            assert a["end"] == b["start"] and a["scenario"] != b["scenario"]
        assert all(s["end"] - s["start"] >= 5.9 for s in segs)
        assert "short-form" in {s["label"] for s in segs}
        assert plan.app in {"youtube", "instagram"}


def test_bad_scenario_and_duration_are_one_line_errors() -> None:
    with pytest.raises(ShortflowError, match="unknown lab scenario 'nope'") as e:
        plan_session("nope", 1)
    assert "\n" not in str(e.value)
    with pytest.raises(ShortflowError, match="outside"):
        plan_session("web", 1, 1.0)
    with pytest.raises(LabError, match="unknown network profile"):
        get_profile("dialup")
    assert {"wifi", "lte", "fibre"} <= set(PROFILES)


def test_session_seed_is_stable_and_distinct() -> None:
    seeds = {session_seed(1, "shorts", i) for i in range(100)}
    assert len(seeds) == 100
    assert session_seed(1, "shorts", 3) == session_seed(1, "shorts", 3)
    assert session_seed(1, "shorts", 3) != session_seed(1, "reels", 3)


def test_write_manifest_merges_rows_by_path(tmp_path: Path) -> None:
    row = dict.fromkeys(MANIFEST_COLUMNS, "x")
    write_manifest(tmp_path, [{**row, "path": "a.pcap"}, {**row, "path": "b.pcap"}])
    write_manifest(tmp_path, [{**row, "path": "a.pcap", "label": "web"}])
    with (tmp_path / "manifest.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert [r["path"] for r in rows] == ["a.pcap", "b.pcap"]
    assert rows[0]["label"] == "web"
    (tmp_path / "manifest.csv").write_text("path,other\n")
    with pytest.raises(LabError, match="columns"):
        write_manifest(tmp_path, [row])


def test_server_request_parsing() -> None:
    r = parse_request("/videoplayback?id=a&len=1000&range=100-199", None)
    assert (r.status, r.start, r.length, r.total) == (206, 100, 100, 1000)
    r = parse_request("/v/x.mp4?len=1000", "bytes=900-")
    assert (r.status, r.start, r.length) == (206, 900, 100)
    assert parse_request("/v/x.mp4?len=1000", None).status == 200
    assert parse_request("/v/x.mp4?len=1000", "bytes=5000-6000").status == 416
    assert parse_request("/v/x.mp4?len=abc", None).status == 404
    assert parse_request("/", "garbage").status == 404
    body = body_bytes(123, 3_000_000)
    assert len(body) == 3_000_000 and body[:10] == body_bytes(123, 10)


def test_cli_parser_and_scenarios_listing(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lab", "scenarios"])
    assert args.handler is handle
    assert handle(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPECTED)
    args = parser.parse_args(
        [
            "lab",
            "generate",
            "--scenario",
            "shorts",
            "--sessions",
            "2",
            "--seed",
            "5",
            "--out",
            "/tmp/x",
            "--profile",
            "lte",
        ]
    )
    assert (args.scenario, args.sessions, args.seed, args.profile) == ("shorts", 2, 5, "lte")
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "generate", "--scenario", "nope", "--out", "/tmp/x"])


def test_make_training_set_checks_names_before_building_a_lab(tmp_path: Path) -> None:
    from training.lab.make_training_set import main, make_training_set

    with pytest.raises(ShortflowError, match="unknown lab scenario"):
        make_training_set(tmp_path, 1, 1, ["wifi"], ["shorts", "nope"])
    with pytest.raises(LabError, match="unknown network profile"):
        make_training_set(tmp_path, 1, 1, ["moon"], ["shorts"])
    assert main(["--out", str(tmp_path), "--profiles", "moon"]) == 2
    assert not list(tmp_path.iterdir())
