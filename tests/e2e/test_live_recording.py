"""End to end: a real `shortflow live --api` on the router of a client / router / server
topology records one client for 15 s while two clients download from the server over HTTP;
the recording is started and read with `shortflow recordings` (its API) in the router's
namespace. Asserted: the pcap holds that client's packets only, both directions; the
manifest row verifies with `shortflow dataset verify` and its flows are training rows of
source "household"; a recording still open at SIGTERM is finished with its row.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classifier.capture.reader import open_capture
from tests.e2e.test_live_log import API_PORT, _live
from tests.netns import Topology, requires_netns

pytestmark = [requires_netns, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
SECOND = "10.77.1.3"  # a second client address on the client's interface
RECORD_S = 15


def _recordings(topo: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    """`shortflow recordings ...` in the router's namespace (the API is on its loopback)."""
    return topo.run(
        topo.router_ns,
        [
            sys.executable,
            "-m",
            "classifier.cli",
            "recordings",
            *args,
            "--api",
            f"http://127.0.0.1:{API_PORT}",
        ],
        timeout=60,
    )


def _downloads(topo: Topology, source: str, seconds: float) -> subprocess.Popen[bytes]:
    """curl fetching 1 MB from the server over and over from ``source``, for ``seconds``."""
    url = f"http://{topo.addr['server']}/blob"
    loop = (
        f"end=$((SECONDS+{int(seconds)})); while [ $SECONDS -lt $end ]; do "
        f"curl -s -o /dev/null --interface {source} {url}; sleep 0.3; done"
    )
    return topo.popen(topo.client_ns, ["bash", "-c", loop])


def test_record_a_client_over_the_api(tmp_path: Path) -> None:
    from tests.training.test_train import make_dataset
    from training.dataset import flow_table
    from training.train import train

    with Topology("sf-record") as topo:
        topo.run(topo.client_ns, ["ip", "addr", "add", f"{SECOND}/24", "dev", topo.iface["client"]])
        www = tmp_path / "www"
        www.mkdir()
        (www / "blob").write_bytes(bytes(range(256)) * 4096)
        topo.popen(
            topo.server_ns,
            [sys.executable, "-m", "http.server", "--bind", topo.addr["server"], "80"],
            cwd=www,
        )
        topo.wait_listening(topo.server_ns, 80)
        data = tmp_path / "data"
        live, log = _live(topo, tmp_path, "--data-dir", str(data), "-q")
        try:
            phone, other = topo.addr["client"], SECOND
            out = _recordings(
                topo,
                "start",
                phone,
                "--minutes",
                str(RECORD_S / 60),
                "--label",
                "long-form",
                "--alias",
                "test phone",
            )
            rec_id = out.stdout.split("id ")[1].split(",")[0]
            _recordings(topo, "start", other, "--minutes", "30", "--label", "other")
            traffic = [_downloads(topo, phone, RECORD_S + 2), _downloads(topo, other, 8)]
            deadline = time.monotonic() + RECORD_S + 15
            while True:
                doc = json.loads(_recordings(topo, "list", "--json").stdout)
                rec = {r["id"]: r for r in doc["recordings"]}[rec_id]
                if rec["state"] != "running":
                    break
                assert time.monotonic() < deadline and live.poll() is None, log.read_text()
                time.sleep(1)
            assert rec["state"] == "done" and rec["dropped"] == 0, rec
            assert RECORD_S <= rec["duration_s"] < RECORD_S + 2
            for proc in traffic:
                proc.wait(timeout=30)
            dest = tmp_path / "download.pcap"
            _recordings(topo, "download", rec_id, "-o", str(dest))
        finally:
            live.send_signal(signal.SIGTERM)
            assert live.wait(timeout=30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()

    pcap = data / "recordings" / f"{rec_id}.pcap"
    assert dest.read_bytes() == pcap.read_bytes()
    packets = list(open_capture(pcap))
    assert len(packets) > 100 and rec["packets"] == len(packets)
    assert all(phone in (p.src, p.dst) for p in packets)
    assert {p.src for p in packets} == {phone, topo.addr["server"]}  # both directions
    down = sum(p.payload_len for p in packets if p.dst == phone)
    assert down > 5_000_000  # several 1 MB downloads
    if shutil.which("tshark"):
        assert subprocess.run(["tshark", "-r", str(pcap)], capture_output=True).returncode == 0

    manifest = data / "recordings" / "manifest.csv"
    verify = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "dataset", "verify", str(manifest)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "2 capture(s), ok" in verify.stderr
    from training.manifest import load_manifest

    rows = {r.path.stem: r for r in load_manifest(manifest)}
    row = rows[rec_id]
    assert (row.label, row.app, row.device, row.recorded) == (
        "long-form",
        "youtube",
        "test phone",
        "household",
    )
    (second,) = [r for r in rows.values() if r is not row]  # open at SIGTERM: finished
    assert "live mode stopped" in second.notes and second.device == other
    counted = re.search(r"; (\d+) packets;", second.notes)
    assert counted and int(counted.group(1)) > 100  # the other client's traffic was there

    flows = flow_table([manifest])
    assert set(flows["source"]) == {"household"}
    mine = flows[flows["capture_id"] == row.capture_id]
    assert (mine["label"] == "long-form").any()

    # `shortflow train` beside other data: the household's rows are scored on their own
    other_data = make_dataset(tmp_path / "other", per_kind=2)
    info = train([other_data, manifest], tmp_path / "model", candidates=["names"], n_splits=2)
    sources = {r["source"] for r in info.metrics["comparison"]}
    assert {"all", "household", "lab", "real"} <= sources
