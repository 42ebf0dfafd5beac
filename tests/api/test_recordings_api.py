"""/v1/live/recordings and `shortflow recordings ...` against a real server with a real
live state and Recorder (packets handed over as the live loop does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from classifier.capture.reader import open_capture
from tests.api.conftest import TOKEN, LiveParts, RunningServer
from tests.test_recording import PHONE, _tcp

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHORTFLOW_API")}
    env["SHORTFLOW_API_TOKEN"] = TOKEN
    return subprocess.run(
        [sys.executable, "-m", "classifier.cli", "recordings", *args, "--api", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_recordings_over_the_api(live_api: RunningServer, live_parts: LiveParts) -> None:
    client = live_api.client(headers=AUTH)
    assert live_api.client().get("/v1/live/recordings").status_code == 401
    bad = client.post("/v1/live/recordings", json={"client": PHONE, "minutes": 1, "label": "x"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert (
        client.post(
            "/v1/live/recordings", json={"client": "phone", "minutes": 1, "label": "shorts"}
        ).status_code
        == 422
    )
    r = client.post(
        "/v1/live/recordings",
        json={"client": PHONE, "minutes": 5, "label": "reels", "alias": "anna"},
    )
    assert r.status_code == 201, r.text
    rec = r.json()
    assert (rec["state"], rec["app"], rec["alias"]) == ("running", "instagram", "anna")
    again = client.post("/v1/live/recordings", json={"client": PHONE, "minutes": 1, "label": "x2"})
    assert again.status_code == 422
    dup = client.post("/v1/live/recordings", json={"client": PHONE, "minutes": 1, "label": "other"})
    assert dup.status_code == 409 and "already being recorded" in dup.json()["detail"]

    live_parts.state.record_packets([_tcp(i) for i in range(30)])
    deadline = time.monotonic() + 10
    while client.get("/v1/live/recordings").json()["recordings"][0]["packets"] < 30:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get(f"/v1/live/recordings/{rec['id']}/capture").status_code == 409
    stopped = client.post(f"/v1/live/recordings/{rec['id']}:stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"

    got = client.get(f"/v1/live/recordings/{rec['id']}/capture")
    assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert got.content == Path(rec["path"]).read_bytes()

    relabel = client.patch(
        f"/v1/live/recordings/{rec['id']}",
        json={"label": "shorts", "intervals": [{"start_s": 0, "end_s": 1, "label": "shorts"}]},
    )
    assert relabel.status_code == 200 and relabel.json()["app"] == "youtube"
    assert relabel.json()["intervals"][0]["label"] == "short-form"
    assert (
        client.patch(
            f"/v1/live/recordings/{rec['id']}",
            json={"label": "shorts", "intervals": [{"start_s": 3, "end_s": 1, "label": "web"}]},
        ).status_code
        == 422
    )
    assert client.delete(f"/v1/live/recordings/{rec['id']}").status_code == 204
    for method, path in (
        ("DELETE", f"/v1/live/recordings/{rec['id']}"),
        ("POST", f"/v1/live/recordings/{rec['id']}:stop"),
        ("GET", f"/v1/live/recordings/{rec['id']}/capture"),
    ):
        missing = client.request(method, path)
        assert missing.status_code == 404, (method, path, missing.text)
        assert missing.headers["content-type"] == "application/problem+json"


def test_recordings_cli(live_api: RunningServer, live_parts: LiveParts, tmp_path: Path) -> None:
    url = live_api.url
    out = _cli("start", PHONE, "--minutes", "5", "--label", "shorts", "--alias", "tv", url=url)
    assert out.returncode == 0, out.stderr
    rec_id = out.stdout.split("id ")[1].split(",")[0]
    live_parts.state.record_packets([_tcp(i) for i in range(12)])
    time.sleep(0.5)
    listing = _cli("list", url=url)
    assert listing.returncode == 0 and rec_id in listing.stdout and "running" in listing.stdout
    assert _cli("stop", rec_id, url=url).returncode == 0
    dest = tmp_path / "mine.pcap"
    down = _cli("download", rec_id, "-o", str(dest), url=url)
    assert down.returncode == 0, down.stderr
    assert len(list(open_capture(dest))) == 12

    timeline = tmp_path / "t.json"
    timeline.write_text(json.dumps({"intervals": [{"start_s": 0, "end_s": 2, "label": "web"}]}))
    relabel = _cli("relabel", rec_id, "--label", "mixed", "--timeline", str(timeline), url=url)
    assert relabel.returncode == 0, relabel.stderr
    doc = json.loads(_cli("list", "--json", url=url).stdout)
    (mine,) = [r for r in doc["recordings"] if r["id"] == rec_id]
    assert mine["label"] == "mixed" and mine["intervals"][0]["label"] == "web"

    assert _cli("delete", rec_id, url=url).returncode == 0
    gone = _cli("delete", rec_id, url=url)
    assert gone.returncode == 2 and "404" in gone.stderr and len(gone.stderr.splitlines()) == 1
    bad = _cli("start", "phone", "--minutes", "1", "--label", "shorts", url=url)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
