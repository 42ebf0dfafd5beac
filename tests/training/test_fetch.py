"""`shortflow dataset fetch`: downloads from a local HTTP server on 127.0.0.1, the cache,
one-line errors, and rows resolving to the fetched copies; the public manifests' urls."""

from __future__ import annotations

import csv
import hashlib
import http.server
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from classifier.capture.pcap_writer import LINKTYPE_ETHERNET, global_header, record
from training.dataset import load_rows
from training.manifest import MANIFEST_COLUMNS, OPTIONAL_COLUMNS, load_manifest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "samples" / "sample.pcap"
SHORTFLOW = [sys.executable, "-m", "classifier.cli"]
RAW = "https://raw.githubusercontent.com/"


def _tiny_pcap() -> bytes:
    """A valid one-packet pcap: Ethernet / IPv4 / UDP 10.0.0.1:5000 -> 10.0.0.2:443."""
    payload = b"shortflow fetch test"
    udp = struct.pack("!HHHH", 5000, 443, 8 + len(payload), 0) + payload
    ip = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            1,
            0,
            64,
            17,
            0,
            bytes([10, 0, 0, 1]),
            bytes([10, 0, 0, 2]),
        )
        + udp
    )
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip
    return global_header(LINKTYPE_ETHERNET, 65535) + record(1_700_000_000, frame)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Serves ``tmp_path/www`` on 127.0.0.1; yields the base url and the requested paths."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(www)))
    httpd.timeout = 5
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = [*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def _run(*args: str | Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHORTFLOW, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "SHORTFLOW_CACHE": str(cache)},
    )


def test_fetch_downloads_verifies_and_resolves(
    tmp_path: Path, server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, requests = server
    www = tmp_path / "www"
    shutil.copyfile(SAMPLE, www / "sample.pcap")
    tiny = _tiny_pcap()
    (www / "tiny.pcap").write_bytes(tiny)
    (www / "wrong.pcap").write_bytes(tiny + b"tampered")
    sample_sha = _sha(SAMPLE.read_bytes())
    tiny_sha = _sha(tiny)
    cache = tmp_path / "cache"
    listed = tmp_path / "manifests"
    listed.mkdir()
    (listed / "here.pcap").write_bytes(tiny + b"\x00")  # present locally, no download
    good = [
        {
            "path": "../shared/web/sample.pcap",
            "sha256": sample_sha,
            "label": "web",
            "app": "sample",
            "url": f"{base}/sample.pcap",
        },
        {
            "path": "../shared/other/tiny.pcap",
            "sha256": tiny_sha,
            "label": "other",
            "app": "tiny",
            "url": f"{base}/tiny.pcap",
        },
    ]
    bad = [
        {
            "path": "../shared/other/wrong.pcap",
            "sha256": _sha(b"what the manifest expects"),
            "label": "other",
            "app": "wrong",
            "url": f"{base}/wrong.pcap",
        },
        {
            "path": "../shared/other/gone.pcap",
            "sha256": "1" * 64,
            "label": "other",
            "app": "gone",
            "url": f"{base}/gone.pcap",
        },
        {
            "path": "../shared/other/refused.pcap",
            "sha256": "2" * 64,
            "label": "other",
            "app": "refused",
            "url": f"http://127.0.0.1:{_closed_port()}/refused.pcap",
        },
    ]
    local = [
        {
            "path": "here.pcap",
            "sha256": _sha(tiny + b"\x00"),
            "label": "web",
            "app": "x",
            "url": f"{base}/never-requested.pcap",
        },
        {"path": "mine.pcap", "sha256": "3" * 64, "label": "web", "app": "household"},
    ]
    manifest = _write_manifest(listed / "m.csv", good + bad + local)

    run = _run("dataset", "fetch", manifest, "--timeout", "10", cache=cache)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == len(good + bad + local)
    captures = cache / "captures"
    assert sorted(p.name for p in captures.iterdir()) == sorted(
        [f"{sample_sha}-sample.pcap", f"{tiny_sha}-tiny.pcap"]
    )  # nothing partial is left
    assert _sha((captures / f"{sample_sha}-sample.pcap").read_bytes()) == sample_sha
    assert (captures / f"{tiny_sha}-tiny.pcap").read_bytes() == tiny
    fetched = [line for line in lines if line.startswith("fetched")]
    assert len(fetched) == 2 and all("bytes) ->" in line for line in fetched)

    (wrong,) = [line for line in lines if "wrong.pcap" in line]
    assert wrong.startswith("error") and "sha256 mismatch" in wrong
    assert bad[0]["sha256"] in wrong and _sha(tiny + b"tampered") in wrong
    (gone,) = [line for line in lines if "gone.pcap" in line]
    assert gone.startswith("error") and "HTTP 404" in gone
    (refused,) = [line for line in lines if "refused.pcap" in line]
    assert refused.startswith("error") and "refused" in refused.lower()
    assert any(line.startswith("ok") and "here.pcap (present)" in line for line in lines)
    (mine,) = [line for line in lines if "mine.pcap" in line]
    assert mine.startswith("no url")
    assert "2 fetched" in run.stderr and "3 failed" in run.stderr
    assert "/never-requested.pcap" not in requests

    # a second run downloads nothing it already has
    requests.clear()
    again = _run("dataset", "fetch", manifest, cache=cache)
    assert again.returncode == 1
    assert "/sample.pcap" not in requests and "/tiny.pcap" not in requests
    assert sum(line.startswith("ok") for line in again.stdout.splitlines()) == 3
    assert "0 fetched" in again.stderr

    # the listed paths do not exist: verify and the rows read the cached copies
    ok_manifest = _write_manifest(listed / "ok.csv", good)
    verify = _run("dataset", "verify", ok_manifest, cache=cache)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert _run("dataset", "verify", ok_manifest, cache=tmp_path / "empty").returncode == 1
    monkeypatch.setenv("SHORTFLOW_CACHE", str(cache))
    rows = load_rows([ok_manifest])
    assert [r.local_path for r in rows] == [
        captures / f"{sample_sha}-sample.pcap",
        captures / f"{tiny_sha}-tiny.pcap",
    ]
    assert [r.path.name for r in rows] == ["sample.pcap", "tiny.pcap"]  # names stay
    assert load_manifest(manifest)[5].local_path == listed / "here.pcap"
    # without a fetched copy a row reads its listed path (and errors name it)
    monkeypatch.setenv("SHORTFLOW_CACHE", str(tmp_path / "empty"))
    assert load_manifest(ok_manifest)[0].local_path == tmp_path / "shared/web/sample.pcap"


def test_fetch_times_out_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts the connection, never answers
        port = sock.getsockname()[1]
        manifest = _write_manifest(
            tmp_path / "m.csv",
            [
                {
                    "path": "slow.pcap",
                    "sha256": "4" * 64,
                    "label": "web",
                    "app": "x",
                    "url": f"http://127.0.0.1:{port}/slow.pcap",
                }
            ],
        )
        run = _run("dataset", "fetch", manifest, "--timeout", "1", cache=tmp_path / "c")
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"error   slow.pcap: http://127.0.0.1:{port}/slow.pcap: timed out after 1 s"
    ]
    assert "Traceback" not in run.stderr
    assert list((tmp_path / "c" / "captures").iterdir()) == []


_SOURCE = re.compile(r"\((?P<repo>[\w.-]+/[\w.-]+) @(?P<commit>[0-9a-f]{7,40})[ ,]")


@pytest.mark.parametrize("name", ["public.csv", "ci.csv"])
def test_public_rows_have_raw_github_urls(name: str) -> None:
    rows = load_manifest(REPO / "datasets" / name)
    public = [(r, m) for r in rows if (m := _SOURCE.search(r.recorded))]
    assert len(public) == len(rows) > 0  # every row of these manifests is a public capture
    for row, match in public:
        prefix = f"{RAW}{match['repo']}/{match['commit']}"
        assert row.url.startswith(prefix), (row.path.name, row.url)
        assert row.url.rsplit("/", 1)[-1] in row.path.name, row.url
