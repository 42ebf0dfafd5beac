"""The recorder of a client's own traffic (classifier.live.recording): real pcap files, a real
writer thread, real manifests checked by the dataset code, a real SIGKILLed process."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from classifier.capture.packet import TCP, UDP, Packet
from classifier.capture.reader import open_capture
from classifier.enforce.audit import AuditLog
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import PolicyHolder
from classifier.errors import RecordingError, RecordingNotFound
from classifier.live.recording import MANIFEST_HEADER, SESSION_LABELS, Recorder
from classifier.live.state import LiveState

ROOT = Path(__file__).resolve().parents[1]
PHONE = "10.77.1.2"
OTHER = "10.77.1.3"
SERVER = "10.77.2.2"
T0 = 1_800_000_000.0


def _tcp(i: int, src: str = PHONE, dst: str = SERVER, plen: int = 1448, opts: int = 12) -> Packet:
    """A TCP packet whose header had ``opts`` bytes of options (ip_len says so)."""
    up = src == PHONE
    return Packet(
        T0 + i * 0.001,
        14 + 20 + 20 + opts + plen,
        20 + 20 + opts + plen,
        4,
        src,
        dst,
        TCP,
        40000 if up else 443,
        443 if up else 40000,
        0x18 | (0x100 if i % 7 == 0 else 0),
        (1000 + i * plen) & 0xFFFFFFFF,
        plen,
        bytes(range(256))[: min(plen, 64)],  # a header-only capture: 64 bytes kept
    )


def _udp(i: int, src: str, dst: str, plen: int = 300, v6: bool = False) -> Packet:
    return Packet(
        T0 + i * 0.001 + 0.0005,
        (54 if v6 else 34) + 8 + plen,
        (40 if v6 else 20) + 8 + plen,
        6 if v6 else 4,
        src,
        dst,
        UDP,
        5353,
        443,
        0,
        0,
        plen,
        b"q" * plen,
    )


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    rec = Recorder(tmp_path / "data")
    try:
        yield rec
    finally:
        rec.close()


def _same(a: Packet, b: Packet) -> bool:
    """Equal as live mode sees them (the link header is not kept: wire_len differs)."""
    fields = [f for f in Packet.__slots__ if f not in ("ts", "wire_len")]
    return all(getattr(a, f) == getattr(b, f) for f in fields) and abs(a.ts - b.ts) < 2e-6


def test_packets_of_the_client_round_trip_and_manifest_verifies(
    recorder: Recorder, tmp_path: Path
) -> None:
    from training.dataset import source_of
    from training.manifest import load_manifest, verify_manifest
    from training.sessions import read_timeline

    info = recorder.start(PHONE, 5, "shorts", alias="Anna's phone, blue")
    assert info["state"] == "running" and info["app"] == "youtube"
    mine = [_tcp(i) for i in range(50)] + [_tcp(i, SERVER, PHONE, plen=0, opts=0) for i in (3, 9)]
    mine += [_udp(60, SERVER, PHONE)]
    others = [_tcp(i, OTHER, SERVER) for i in range(5)] + [_udp(61, "fd00::1", "fd00::2", v6=True)]
    assert recorder.offer(mine[:20] + others + mine[20:]) == 0
    _wait(lambda: recorder.list()[0]["packets"] == len(mine))
    done = recorder.stop(info["id"])
    assert done["state"] == "stopped" and done["dropped"] == 0 and done["end"] is not None

    pcap = recorder.file(info["id"])
    got = list(open_capture(pcap))
    assert len(got) == len(mine)
    assert all(_same(a, b) for a, b in zip(mine, got, strict=True))
    assert done["bytes"] == pcap.stat().st_size
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(pcap)], capture_output=True, text=True)
        assert out.returncode == 0 and len(out.stdout.splitlines()) == len(mine)
        good = subprocess.run(  # the IPv4 header checksums are right
            [
                "tshark",
                "-o",
                "ip.check_checksum:TRUE",
                "-r",
                str(pcap),
                "-Y",
                "ip.checksum.status == 1",
            ],
            capture_output=True,
            text=True,
        )
        assert len(good.stdout.splitlines()) == len(mine)

    manifest = recorder.manifest
    assert verify_manifest(manifest) == []
    (row,) = load_manifest(manifest)
    assert (row.label, row.app, row.device) == ("short-form", "youtube", "Anna's phone, blue")
    assert source_of(row.recorded) == "household" and row.path == pcap
    assert info["id"] in row.notes and "duration" in row.notes
    (interval,) = read_timeline(pcap) or []
    assert interval[2] == "short-form" and interval[1] > interval[0]


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "data", queue_packets=10)
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    holder = PolicyHolder()
    enforcer = Enforcer("dry-run", None, audit, holder)
    state = LiveState(enforcer, holder, recorder=recorder)
    try:
        rec = state.start_recording(PHONE, 1, "reels")
        state.record_packets([_tcp(i) for i in range(100)])  # one batch: 10 fit
        assert state.counters_snapshot()["record_drops"] == 90
        assert recorder.dropped == 90
        _wait(lambda: state.recordings()[0]["packets"] == 10)
        out = state.stop_recording(rec["id"])
        assert (out["packets"], out["dropped"]) == (10, 90)
        saved = json.loads((recorder.dir / f"{rec['id']}.json").read_text())
        assert saved["dropped"] == 90 and saved["state"] == "stopped"
    finally:
        recorder.close()
        enforcer.close()
        audit.close()


def test_size_cap_ends_the_recording_cleanly(tmp_path: Path) -> None:
    from training.manifest import verify_manifest

    recorder = Recorder(tmp_path / "data", max_mb=0.002)  # 2 kB: 15 records of 132 bytes
    try:
        rec = recorder.start(PHONE, 10, "long-form")
        recorder.offer([_tcp(i) for i in range(40)])
        _wait(lambda: recorder.list()[0]["state"] != "running")
        (out,) = recorder.list()
        assert out["state"] == "capped" and "size cap" in out["reason"]
        assert out["packets"] == 15 and out["bytes"] <= 2_000 + 24
        assert len(list(open_capture(recorder.file(rec["id"])))) == out["packets"]
        assert verify_manifest(recorder.manifest) == []
    finally:
        recorder.close()
    # the whole folder's cap: the running recording ends, a new one is refused
    recorder = Recorder(tmp_path / "data", dir_max_mb=0.004)
    try:
        rec = recorder.start(OTHER, 10, "other")
        recorder.offer([_tcp(i, OTHER) for i in range(40)])
        _wait(lambda: recorder.list()[0]["state"] != "running")
        out = recorder.list()[0]
        assert out["state"] == "capped" and "folder reached its cap" in out["reason"]
        assert 0 < out["packets"] < 40 and verify_manifest(recorder.manifest) == []
        with pytest.raises(RecordingError, match="folder is full"):
            recorder.start(PHONE, 1, "other")
        assert recorder.delete(rec["id"])  # room again
        recorder.close()
        recorder = Recorder(tmp_path / "data", dir_max_mb=0.004)
        recorder.stop(recorder.start(PHONE, 1, "other")["id"])
    finally:
        recorder.close()


def test_time_up_relabel_delete(recorder: Recorder) -> None:
    from training.manifest import load_manifest
    from training.sessions import read_timeline

    rec = recorder.start(PHONE, 0.01, "long-form", app="Netflix")  # 0.6 s
    recorder.offer([_tcp(i) for i in range(5)])
    _wait(lambda: recorder.list()[0]["state"] == "done", timeout=5)
    assert recorder.list()[0]["reason"] == "its time was up"
    (row,) = load_manifest(recorder.manifest)
    assert (row.label, row.app) == ("long-form", "netflix")

    out = recorder.relabel(
        rec["id"],
        "reels",
        [
            {"start_s": 0, "end_s": 0.3, "label": "reels"},
            {"start_s": 0.3, "end_s": 0.6, "label": "long-form"},
        ],
    )
    assert (out["label"], out["session_label"], out["app"]) == ("reels", "short-form", "instagram")
    (row,) = load_manifest(recorder.manifest)
    assert (row.label, row.app) == ("short-form", "instagram")
    spans = read_timeline(recorder.file(rec["id"])) or []
    assert [s[2] for s in spans] == ["short-form", "long-form"]
    assert math.isclose(spans[0][0], rec["start"], abs_tol=1e-3)

    recorder.relabel(rec["id"], "other")  # no intervals: the whole recording
    assert [s[2] for s in read_timeline(recorder.file(rec["id"])) or []] == ["other"]

    pcap = Path(rec["path"])
    assert recorder.delete(rec["id"]) is True
    assert not pcap.exists() and not pcap.with_suffix(".timeline.json").exists()
    assert load_manifest(recorder.manifest) == [] and recorder.list() == []
    assert recorder.delete(rec["id"]) is False


def test_bad_requests_are_one_line_errors(recorder: Recorder) -> None:
    for client in ("phone", "10.77.1.300", ""):
        with pytest.raises(RecordingError, match="not an IP address"):
            recorder.start(client, 1, "shorts")
    for minutes in (0, -1, float("nan"), float("inf"), 2000, "soon"):
        with pytest.raises(RecordingError, match="minutes"):
            recorder.start(PHONE, minutes, "shorts")  # type: ignore[arg-type]
    with pytest.raises(RecordingError, match="unknown label 'cats'"):
        recorder.start(PHONE, 1, "cats")
    with pytest.raises(RecordingError, match="app"):
        recorder.start(PHONE, 1, "other", app="a b\n")
    rec = recorder.start(PHONE, 1, "tiktok")
    with pytest.raises(RecordingError, match="already being recorded"):
        recorder.start(PHONE, 1, "shorts")
    with pytest.raises(RecordingError, match="still running"):
        recorder.file(rec["id"])
    with pytest.raises(RecordingError, match="interval 1"):
        recorder.relabel(rec["id"], "shorts", [{"start_s": 5, "end_s": 1, "label": "shorts"}])
    with pytest.raises(RecordingError, match="unknown label"):
        recorder.relabel(rec["id"], "shorts", [{"start_s": 0, "end_s": 1, "label": "x"}])
    for bad in ("rec-nope", "../../etc/passwd", "rec-20260101T000000-abcdef"):
        with pytest.raises(RecordingNotFound):
            recorder.stop(bad)
        with pytest.raises(RecordingNotFound):
            recorder.file(bad)
        assert recorder.delete(bad) is False
    for err in (RecordingError, RecordingNotFound):
        try:
            recorder.stop("nope\nmore")
        except err as exc:
            assert "\n" not in str(exc).replace("'nope\\nmore'", "")


def test_live_state_without_a_recorder() -> None:
    holder = PolicyHolder()
    state = LiveState(Enforcer("off", None, None, holder), holder)  # type: ignore[arg-type]
    assert state.recordings() == [] and state.delete_recording("rec-x") is False
    with pytest.raises(RecordingError, match="recording is off"):
        state.start_recording(PHONE, 1, "shorts")
    state.record_packets([_tcp(0)])  # nothing to do, no error


def test_close_finishes_running_recordings(tmp_path: Path) -> None:
    from training.manifest import verify_manifest

    recorder = Recorder(tmp_path / "data")
    a = recorder.start(PHONE, 5, "shorts")
    b = recorder.start(OTHER, 5, "other")
    recorder.offer([_tcp(i) for i in range(10)] + [_tcp(i, OTHER, PHONE) for i in range(3)])
    recorder.close()
    recs = {r["id"]: r for r in Recorder(tmp_path / "data").list()}
    assert recs[a["id"]]["state"] == recs[b["id"]]["state"] == "stopped"
    # packets between two recorded clients go to both recordings
    assert (recs[a["id"]]["packets"], recs[b["id"]]["packets"]) == (13, 3)
    assert verify_manifest(recorder.manifest) == []


KILLED = """
import sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from classifier.live.recording import Recorder
from tests.test_recording import _tcp
r = Recorder(Path(sys.argv[1]))
r.start("10.77.1.2", 5, "shorts")
r.offer([_tcp(i) for i in range(200)])
while r.list()[0]["packets"] < 200:
    time.sleep(0.02)
time.sleep(1.5)  # flushed
print("ready", flush=True)
time.sleep(60)
"""


def test_sigkill_leaves_a_readable_pcap_that_the_next_start_finishes(tmp_path: Path) -> None:
    from training.manifest import verify_manifest

    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(data), str(ROOT)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (pcap,) = (data / "recordings").glob("rec-*.pcap")
    with pcap.open("ab") as fh:  # a record cut short by the kill
        fh.write(b"\x00" * 20)
    assert len(list(open_capture(pcap))) == 200  # readable as it is (truncated at the end)
    assert not (data / "recordings" / "manifest.csv").exists()

    recorder = Recorder(data)
    try:
        (rec,) = recorder.list()
        assert rec["state"] == "stopped" and "interrupted" in rec["reason"]
        assert rec["packets"] == 200 and rec["bytes"] == pcap.stat().st_size
        assert verify_manifest(recorder.manifest) == []
    finally:
        recorder.close()


def test_labels_and_columns_agree_with_the_dataset_code() -> None:
    from training.manifest import MANIFEST_COLUMNS, OPTIONAL_COLUMNS
    from training.manifest import SESSION_LABELS as DATASET_LABELS

    assert SESSION_LABELS == DATASET_LABELS
    assert MANIFEST_HEADER == (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS)
