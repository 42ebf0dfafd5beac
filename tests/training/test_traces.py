"""Trace import: round trips through the real featurizer, determinism, errors, the cache."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from classifier.errors import DatasetError
from classifier.features.featurize import featurize
from tests.shared_data import SHARED, needs_files
from training.dataset_cli import register
from training.labels import flow_labels
from training.manifest import load_manifest, verify_manifest
from training.traces import (
    TCP,
    UDP,
    ensure_imported,
    import_traces,
    read_csv_trace,
    read_json_trace,
)

REPO = Path(__file__).resolve().parents[2]
REELS = SHARED / "other" / "sdrdray_reels_01.json"
YOUTUBE = SHARED / "traces" / "uuvideo_youtube_480_480_merged_002.csv"
TWITCH = SHARED / "traces" / "uuvideo_twitch_480_480_merged_002.csv"
needs_shared = needs_files(
    "other/sdrdray_reels_01.json",
    "traces/uuvideo_youtube_480_480_merged_002.csv",
    "traces/uuvideo_twitch_480_480_merged_002.csv",
)


def _ip_bytes(length: int, proto: int) -> int:
    """What the featurizer's ip_len must be for a frame of ``length`` bytes."""
    return 40 if proto == TCP and length == 60 else length - 14


def _head_sessions(src: Path, dest: Path, sessions: int) -> Path:
    """The first ``sessions`` sessions of a per-session CSV, under the same file name."""
    out: list[str] = []
    seen = 0
    for line in src.read_text().splitlines():
        if line.startswith("session,"):
            seen += 1
            if seen > sessions:
                break
        out.append(line)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / src.name
    path.write_text("\n".join(out) + "\n")
    return path


def _check_round_trip(
    pcap: Path,
    lengths: list[int],
    times_us: list[int],
    to_server: list[bool],
    proto: int,
    flows_expected: int | None = 1,
) -> None:
    flows = featurize(pcap)
    if flows_expected is not None:
        assert len(flows) == flows_expected
    assert (flows["proto"] == proto).all()
    assert flows["pkts_up"].sum() == sum(to_server)
    assert flows["pkts_down"].sum() == len(lengths) - sum(to_server)
    up = sum(_ip_bytes(n, proto) for n, s in zip(lengths, to_server, strict=True) if s)
    down = sum(_ip_bytes(n, proto) for n, s in zip(lengths, to_server, strict=True) if not s)
    assert flows["bytes_up"].sum() == up
    assert flows["bytes_down"].sum() == down
    if flows_expected == 1:
        span = (max(times_us) - min(times_us)) / 1e6
        assert flows["duration"].iloc[0] == pytest.approx(span, abs=1e-6)
        assert flows["server_port"].iloc[0] == 443
        assert flows["client"].iloc[0] == "10.77.200.2"


def test_small_csv_round_trip_and_determinism(tmp_path: Path) -> None:
    src = tmp_path / "src" / "uuvideo_youtube_test.csv"
    src.parent.mkdir()
    rows = [(0, 1292), (52, 1250), (2655, -1292), (2700, -65), (900_000, 75), (1_500_123, -1292)]
    src.write_text(
        "session,480_1\nrel_ts_us,len\n"
        + "".join(f"{t},{n}\n" for t, n in rows)
        + "session,480_2\nrel_ts_us,len\n0,80\n10,-90\n"
    )
    out = import_traces(src, tmp_path / "a")
    assert [r.path.name for r in out] == [
        "uuvideo_youtube_test__480_1.pcap",
        "uuvideo_youtube_test__480_2.pcap",
    ]
    assert {(r.label, r.app) for r in out} == {("long-form", "youtube")}
    assert out[0].manifest == tmp_path / "a" / "traces.csv"
    assert verify_manifest(out[0].manifest) == []
    _check_round_trip(
        out[0].path, [abs(n) for _, n in rows], [t for t, _ in rows], [n > 0 for _, n in rows], UDP
    )
    again = import_traces(src, tmp_path / "b")
    assert out[0].path.read_bytes() == again[0].path.read_bytes()
    assert [r.sha256 for r in out] == [r.sha256 for r in again]
    # re-importing into the same folder replaces the rows instead of duplicating them
    import_traces(src, tmp_path / "a")
    assert len(load_manifest(tmp_path / "a" / "traces.csv")) == 2


def test_tcp_csv_trace_padding_and_snaplen(tmp_path: Path) -> None:
    src = tmp_path / "uuvideo_twitch_t.csv"
    rows = [(0, 66), (1140, -66), (1186, 54), (2625, -60), (234432, -1514), (234471, -2084)]
    src.write_text("session,s\nrel_ts_us,len\n" + "".join(f"{t},{n}\n" for t, n in rows))
    full = import_traces(src, tmp_path / "full")[0]
    short = import_traces(src, tmp_path / "short", snaplen=96)[0]
    assert full.label == "other-video" and full.app == "twitch"
    for row in (full, short):
        _check_round_trip(
            row.path, [abs(n) for _, n in rows], [t for t, _ in rows], [n > 0 for _, n in rows], TCP
        )
    assert short.path.stat().st_size < full.path.stat().st_size
    assert full.path.stat().st_size == 24 + sum(16 + abs(n) for _, n in rows)


def test_small_json_round_trip(tmp_path: Path) -> None:
    base = 1755928534.0
    recs = [
        {
            "timestamp": base + 0.000,
            "size": 66,
            "src_port": 5000,
            "dst_port": 443,
            "direction": "outbound",
            "tcp_flags": "S",
            "protocol": "TCP",
        },
        {
            "timestamp": base + 0.020,
            "size": 66,
            "src_port": 443,
            "dst_port": 5000,
            "direction": "inbound",
            "tcp_flags": "SA",
            "protocol": "TCP",
        },
        {
            "timestamp": base + 0.021,
            "size": 54,
            "src_port": 5000,
            "dst_port": 443,
            "direction": "outbound",
            "tcp_flags": "A",
            "protocol": "TCP",
        },
        {
            "timestamp": base + 0.030,
            "size": 16460,
            "src_port": 443,
            "dst_port": 5000,
            "direction": "inbound",
            "tcp_flags": "PA",
            "protocol": "TCP",
        },
        {
            "timestamp": base + 0.0299,
            "size": 60,
            "src_port": 443,
            "dst_port": 6000,
            "direction": "inbound",
            "tcp_flags": "A",
            "protocol": "TCP",
        },
        {
            "timestamp": base + 0.040,
            "size": 54,
            "src_port": 6000,
            "dst_port": 443,
            "direction": "outbound",
            "tcp_flags": "FA",
            "protocol": "TCP",
        },
    ]
    src = tmp_path / "sdrdray_reels_test.json"
    src.write_text(json.dumps(recs))
    session = read_json_trace(src)
    assert session.reordered == 1 and len(session.conns) == 2
    (row,) = import_traces(src, tmp_path / "out")
    assert row.label == "short-form" and row.app == "instagram" and row.date == "2025-08-23"
    assert "1 out-of-order timestamps sorted" in row.notes
    flows = featurize(row.path)
    assert sorted(flows["client_port"]) == [5000, 6000]
    assert set(flows["server"]) == {"10.77.201.2", "10.77.201.3"}
    first = flows[flows["client_port"] == 5000].iloc[0]
    assert first["flag_syn"] == 2 and first["pkts_up"] == 2 and first["pkts_down"] == 2
    assert first["bytes_down"] == 52 + 16460 - 14  # SYN options are header, not payload
    assert first["payload_down"] == 16460 - 54
    assert flows["bytes_up"].sum() == 52 + 40 + 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,1292\n", r"line 1: packet line before the first 'session,' line"),
        ("session,a\nrel_ts_us,len\n0,abc\n", r"line 3: expected 'rel_ts_us,len' integers"),
        ("session,a\nrel_ts_us,len\n0,30\n", r"line 3: packet length 30 impossible for UDP"),
        ("session,a\nrel_ts_us,len\nsession,b\n0,100\n", r"line 3: session 'a' has no packets"),
        ("", r"no 'session,NAME' line"),
    ],
)
def test_bad_csv_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    src = tmp_path / "uuvideo_youtube_bad.csv"
    src.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_csv_trace(src, UDP)


def test_skip_bad_csv_keeps_the_good_lines_and_sessions(tmp_path: Path) -> None:
    src = tmp_path / "uuvideo_youtube_bad.csv"
    src.write_text(
        "0,1292\nsession,a\nrel_ts_us,len\n0,abc\n5,1292\nsession,b\nsession,c\n9,-100\n"
    )
    skipped: list[str] = []
    sessions = read_csv_trace(src, UDP, skipped)
    assert [(s.name, len(s.packets)) for s in sessions] == [("a", 1), ("c", 1)]
    assert [m.split(": ")[1][:20] for m in skipped] == [
        "packet line before t",
        "expected 'rel_ts_us,",
        "session 'b' has no p",
    ]
    rows = import_traces(src, tmp_path / "out", skip_bad=True)
    assert len(rows) == 2 and all("3 problems on import" in r.notes for r in rows)


def _json_packet(**changes: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "timestamp": 1.0,
        "size": 1514,
        "protocol": "TCP",
        "src_port": 443,
        "dst_port": 50001,
        "direction": "inbound",
        "tcp_flags": "A",
    }
    return {**rec, **changes}


def test_skip_bad_json_leaves_out_bad_records(tmp_path: Path) -> None:
    src = tmp_path / "sdrdray_reels_skip.json"
    records = [_json_packet(), _json_packet(size=3), _json_packet(timestamp=2.0), "junk"]
    src.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"record 1: packet length 3 impossible"):
        import_traces(src, tmp_path / "strict")
    skipped: list[str] = []
    assert len(read_json_trace(src, skipped).packets) == 2
    assert [m.split(": ")[0].rsplit(" ", 1)[1] for m in skipped] == ["1", "3"]
    (row,) = import_traces(src, tmp_path / "out", skip_bad=True)
    assert "2 problems on import" in row.notes
    assert int(featurize(row.path)["pkts_down"].sum()) == 2
    src.write_text(json.dumps(["junk"]))
    with pytest.raises(DatasetError, match="no readable packet record"):
        read_json_trace(src, [])


def test_bad_json_and_unknown_sources(tmp_path: Path) -> None:
    bad = tmp_path / "sdrdray_reels_bad.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "timestamp": 1.0,
                    "size": 54,
                    "src_port": 1,
                    "dst_port": 443,
                    "direction": "sideways",
                    "tcp_flags": "A",
                }
            ]
        )
    )
    with pytest.raises(DatasetError, match=r"record 0: direction must be inbound or outbound"):
        read_json_trace(bad)
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not a JSON trace"):
        read_json_trace(bad)
    other = tmp_path / "mystery.csv"
    other.write_text("session,a\nrel_ts_us,len\n0,100\n")
    with pytest.raises(DatasetError, match="unknown trace source"):
        import_traces(other, tmp_path / "out")
    (row,) = import_traces(other, tmp_path / "out", label="web", app="site", proto="tcp")
    assert row.label == "web" and featurize(row.path)["proto"].iloc[0] == TCP
    with pytest.raises(DatasetError, match="trace not found"):
        import_traces(tmp_path / "nope.csv", tmp_path / "out")
    pcap = tmp_path / "capture.pcap"
    pcap.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20))
    with pytest.raises(DatasetError, match="not a packet trace"):
        import_traces(pcap, tmp_path / "out", label="web", app="x")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00session")
    with pytest.raises(DatasetError, match="not a text trace"):
        import_traces(binary, tmp_path / "out", label="web", app="x")


def test_cli_import_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "uuvideo_twitch_cli.csv"
    src.write_text("session,x\nrel_ts_us,len\n0,100\n5,-1514\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    manifest = tmp_path / "m" / "mine.csv"
    args = parser.parse_args(
        [
            "dataset",
            "import-trace",
            str(src),
            "--out",
            str(tmp_path / "o"),
            "--manifest",
            str(manifest),
            "-q",
        ]
    )
    assert args.handler(args) == 0
    assert "imported 1 session(s)" in capsys.readouterr().out
    (row,) = load_manifest(manifest)
    assert row.path == tmp_path / "o" / "uuvideo_twitch_cli__x.pcap"


@needs_shared
def test_real_reels_trace_round_trip(tmp_path: Path) -> None:
    session = read_json_trace(REELS)
    (row,) = import_traces(REELS, tmp_path)
    flows = featurize(row.path)
    lengths = [p.length for p in session.packets]
    assert len(lengths) == 10_000
    assert flows["pkts_up"].sum() + flows["pkts_down"].sum() == 10_000
    assert flows["bytes_up"].sum() + flows["bytes_down"].sum() == sum(
        _ip_bytes(n, TCP) for n in lengths
    )
    assert sum(n > 1514 for n in lengths) == 288
    span = (session.packets[-1].ts_us - session.packets[0].ts_us) / 1e6
    assert flows["last_ts"].max() - flows["first_ts"].min() == pytest.approx(span, abs=1e-5)
    assert len(flows) >= 79  # one flow per connection at least (79 port pairs)
    labels = flow_labels(flows, row)
    assert (labels == "short-form").sum() == 4
    assert set(labels.dropna()) == {"short-form", "other"}


@needs_shared
@pytest.mark.parametrize(
    ("src", "proto", "label"), [(YOUTUBE, UDP, "long-form"), (TWITCH, TCP, "other-video")]
)
def test_real_csv_sessions_round_trip(tmp_path: Path, src: Path, proto: int, label: str) -> None:
    head = _head_sessions(src, tmp_path / "src", 3)
    sessions = read_csv_trace(head, proto)
    rows = import_traces(head, tmp_path / "out")
    assert len(rows) == len(sessions) == 3
    for row, session in zip(rows, sessions, strict=True):
        assert row.label == label
        _check_round_trip(
            row.path,
            [p.length for p in session.packets],
            [p.ts_us for p in session.packets],
            [p.to_server for p in session.packets],
            proto,
        )
        assert len(session.packets) > 1000


def test_ensure_imported_runs_once(tmp_path: Path) -> None:
    source = tmp_path / "pcaps"
    (source / "traces").mkdir(parents=True)
    (source / "other").mkdir()
    (source / "traces" / "uuvideo_youtube_x.csv").write_text(
        "session,a\nrel_ts_us,len\n0,1292\n9,-1292\nsession,b\nrel_ts_us,len\n0,80\n"
    )
    (source / "other" / "sdrdray_reels_x.json").write_text(
        json.dumps(
            [
                {
                    "timestamp": 1.5,
                    "size": 54,
                    "src_port": 5000,
                    "dst_port": 443,
                    "direction": "outbound",
                    "tcp_flags": "A",
                }
            ]
        )
    )
    (source / "traces" / "unrelated.csv").write_text("not a trace")
    cache = tmp_path / "cache"
    paths = ensure_imported(cache, source=source, progress=False)
    assert sorted(p.name for p in paths) == [
        "sdrdray_reels_x.pcap",
        "uuvideo_youtube_x__a.pcap",
        "uuvideo_youtube_x__b.pcap",
    ]
    rows = load_manifest(cache / "traces.csv")
    assert sorted(r.label for r in rows) == ["long-form", "long-form", "short-form"]
    stamp = [(p, p.stat().st_mtime_ns) for p in paths]
    assert ensure_imported(cache, source=source, progress=False) == paths
    assert [(p, p.stat().st_mtime_ns) for p in paths] == stamp  # not written again
    os.utime(source / "traces" / "uuvideo_youtube_x.csv", (1, 1))  # source changed
    assert sorted(ensure_imported(cache, source=source, progress=False)) == sorted(paths)
    assert len(load_manifest(cache / "traces.csv")) == 3
    with pytest.raises(DatasetError, match="no known traces"):
        ensure_imported(cache, source=tmp_path / "empty", progress=False)


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from training.traces import default_cache_dir

    monkeypatch.setenv("SHORTFLOW_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "traces"
    monkeypatch.delenv("SHORTFLOW_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "shortflow" / "traces"
