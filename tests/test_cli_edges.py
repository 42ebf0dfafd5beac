"""Sharp edges a new user hit in the CLI (issue 18), each run as a user runs it: a real
subprocess of ``shortflow`` on real capture files."""

from __future__ import annotations

import gzip
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from classifier.api.schemas import ClientSummary, FlowVerdict, TimelineSpan
from classifier.model.artifact import DEFAULT_MODEL_DIR, read_info

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "samples" / "sample.pcap"
MODEL_WINDOWS = [w for w in read_info(DEFAULT_MODEL_DIR).decision_windows if w is not None]


def shortflow(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "classifier.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def errors(stderr: str) -> list[str]:
    """stderr without the warning that the compiled kernels are older than the sources
    (seen while someone edits them)."""
    return [line for line in stderr.splitlines() if "ahead-of-time kernels" not in line]


# --- classify --at: every decision window of the model, others refused -------------------


@pytest.mark.parametrize("at", MODEL_WINDOWS)
def test_classify_at_works_for_every_decision_window_of_the_model(at: float) -> None:
    res = shortflow("classify", str(SAMPLE), "--at", f"{at:g}", "--json")
    assert res.returncode == 0, res.stderr
    flows = json.loads(res.stdout)["flows"]
    assert flows and {f["decision_window"] for f in flows} == {f"first {at:g} s"}


def test_classify_at_a_window_the_model_lacks_is_one_line_naming_the_valid_ones() -> None:
    assert 7.0 not in MODEL_WINDOWS
    res = shortflow("classify", str(SAMPLE), "--at", "7")
    assert res.returncode == 2 and res.stdout == ""
    lines = errors(res.stderr)
    assert len(lines) == 1, res.stderr
    assert "--at 7" in lines[0] and ", ".join(f"{w:g}" for w in MODEL_WINDOWS) in lines[0]


# --- classify output: the table's reason, --json as the API's records --------------------


def test_classify_json_is_the_api_record_and_all_columns_only_when_asked() -> None:
    res = shortflow("classify", str(SAMPLE), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"flows", "clients", "timeline"}
    assert doc["flows"] and doc["clients"] and doc["timeline"]
    for flow in doc["flows"]:
        assert list(flow) == list(FlowVerdict.model_fields)
        FlowVerdict.model_validate(flow)
    assert all(list(c) == list(ClientSummary.model_fields) for c in doc["clients"])
    assert all(list(s) == list(TimelineSpan.model_fields) for s in doc["timeline"])
    # the session model's verdicts are kept
    assert "session" in {f["decided_by"] for f in doc["flows"]}

    full = shortflow("classify", str(SAMPLE), "--json", "--all-columns")
    assert full.returncode == 0, full.stderr
    flows = json.loads(full.stdout)["flows"]
    assert len(flows) == len(doc["flows"])
    assert len(flows[0]) > 400 and "at3s__duration" in flows[0] and "burst_count" in flows[0]
    assert {f["flow_id"]: f["label"] for f in flows} == {
        f["flow_id"]: f["label"] for f in doc["flows"]
    }

    alone = shortflow("classify", str(SAMPLE), "--all-columns")
    assert alone.returncode == 2 and "--json" in errors(alone.stderr)[0]


def test_classify_table_has_a_short_reason_column() -> None:
    table = shortflow("classify", str(SAMPLE), "--no-timeline")
    doc = shortflow("classify", str(SAMPLE), "--no-timeline", "--json")
    assert table.returncode == 0 and doc.returncode == 0, table.stderr + doc.stderr
    header = table.stdout.splitlines()[0].split()
    assert header[-1] == "reason" and "decided_by" in header and "client_port" in header
    reasons = [f["reason"] for f in json.loads(doc.stdout)["flows"]]
    assert any(len(r) > 60 for r in reasons)
    for reason in reasons:
        if len(reason) <= 60:
            assert reason in table.stdout
        else:
            assert reason not in table.stdout and reason[:57] + "..." in table.stdout


# --- featurize --skip-bad over several files ---------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_skip_bad_skips_files_that_are_not_captures(tmp_path: Path, jobs: str) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not a capture\n")
    missing = tmp_path / "gone.pcap"
    out = tmp_path / "t.csv"
    res = shortflow(
        "featurize",
        str(SAMPLE),
        str(notes),
        str(missing),
        "--skip-bad",
        "-o",
        str(out),
        "-q",
        "--jobs",
        jobs,
    )
    assert res.returncode == 0, res.stderr
    lines = errors(res.stderr)
    skipped = [line for line in lines if "skipped" in line and "packets" not in line]
    assert len(skipped) == 2, res.stderr
    assert str(notes) in skipped[0] and "not a pcap or pcapng" in skipped[0]
    assert str(missing) in skipped[1] and "no such file" in skipped[1]
    assert "Traceback" not in res.stderr
    alone = tmp_path / "alone.csv"
    assert shortflow("featurize", str(SAMPLE), "-o", str(alone), "-q").returncode == 0
    assert len(pd.read_csv(out)) == len(pd.read_csv(alone)) > 0


def test_skip_bad_with_no_capture_at_all_fails(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n")
    out = tmp_path / "t.csv"
    res = shortflow(
        "featurize", str(notes), str(tmp_path / "gone.pcap"), "--skip-bad", "-o", str(out), "-q"
    )
    assert res.returncode == 2 and not out.exists()
    assert "none of the 2 files" in errors(res.stderr)[-1]
    # without --skip-bad the first bad file stops the run, as before
    res = shortflow("featurize", str(SAMPLE), str(notes), "-o", str(out), "-q")
    assert res.returncode == 2 and not out.exists() and str(notes) in res.stderr


# --- a truncated .pcap.gz is read to the cut, like a truncated plain pcap ----------------


def test_truncated_gzip_capture_is_read_to_the_cut(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    packed = gzip.compress(data)
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    whole = tmp_path / "whole.pcap.gz"
    whole.write_bytes(packed)
    for engine in ("fast", "reference"):
        res = shortflow(
            "featurize", str(cut), "-o", str(tmp_path / f"{engine}.csv"), "-q", "--engine", engine
        )
        assert res.returncode == 0, res.stderr
        warnings = [line for line in errors(res.stderr) if "WARNING" in line]
        assert len(warnings) == 1 and str(cut) in warnings[0], res.stderr
        offset = int(re.search(r"at byte (\d+)", warnings[0]).group(1))  # type: ignore[union-attr]
        assert 0 < offset < len(data)
        assert f"cut short at byte {offset}" in res.stderr  # the summary line
        rows = pd.read_csv(tmp_path / f"{engine}.csv")
        assert 0 < len(rows)
    full = shortflow("featurize", str(whole), "-o", str(tmp_path / "whole.csv"), "-q")
    assert full.returncode == 0 and "WARNING" not in full.stderr and "cut" not in full.stderr
    assert len(rows) < len(pd.read_csv(tmp_path / "whole.csv"))
    # packets before the cut were all read: the cut file's first flows match the whole's
    first = pd.read_csv(tmp_path / "whole.csv").sort_values("first_ts")["first_ts"].iloc[0]
    assert rows.sort_values("first_ts")["first_ts"].iloc[0] == first


# --- shortflow serve: a busy port, and /docs offline --------------------------------------


def _serve_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHORTFLOW_")}


def test_serve_on_a_busy_port_is_one_line_and_no_serving_on() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "classifier.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=_serve_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert res.returncode != 0
    assert "serving on" not in res.stdout + res.stderr
    assert errors(res.stderr) == [
        f"shortflow: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """``shortflow serve`` with the shipped model, on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "classifier.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=_serve_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                break
        assert line.startswith(f"shortflow: serving on http://127.0.0.1:{port}"), line + (
            proc.stderr.read() if proc.poll() is not None else ""
        )
        # "serving on" comes once the server answers: no retry needed
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        yield Served(url, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_app_itself(served: Served, page: str) -> None:
    html = httpx.get(served.url + page, timeout=10)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", html.text)  # Swagger UI's spec
    urls += re.findall(r"""spec-url\s*=\s*["']([^"']+)["']""", html.text)  # ReDoc's
    assert any(u.endswith(".js") for u in urls), html.text
    assert not re.search(r"https?://|//[a-z]", html.text.replace(served.url, "")), html.text
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        got = httpx.get(served.url + url, timeout=10)
        assert got.status_code == 200 and len(got.content) > 100, url


def test_classify_json_equals_the_api_answer(served: Served) -> None:
    cli = shortflow("classify", str(SAMPLE), "--json")
    assert cli.returncode == 0, cli.stderr
    api = httpx.post(
        f"{served.url}/v1/captures:classify",
        timeout=120,
        files={"file": ("sample.pcap", SAMPLE.read_bytes())},
    )
    assert api.status_code == 200, api.text
    doc, answer = json.loads(cli.stdout), api.json()
    for key in ("flows", "clients", "timeline"):
        assert doc[key] == answer[key], key


# --- shortflow flows: --windows works, --snapshots is refused -----------------------------


def test_flows_windows_shows_each_window(tmp_path: Path) -> None:
    res = shortflow("flows", str(SAMPLE), "--windows", "10", "--limit", "1000")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["proto", "client", "server", "window"]
    out = tmp_path / "w.csv"
    assert (
        shortflow("featurize", str(SAMPLE), "--windows", "10", "-o", str(out), "-q").returncode == 0
    )
    table = pd.read_csv(out)
    assert len(lines) - 1 == len(table) > table["flow_id"].nunique()
    media = [line.split()[3] for line in lines[1:] if "googlevideo" in line]
    assert media == ["0-10", "10-20", "20-30"]  # the media flow's windows, in time order
    plain = shortflow("flows", str(SAMPLE), "--limit", "1000")
    assert len(plain.stdout.splitlines()) - 1 == table["flow_id"].nunique()


def test_flows_refuses_snapshots_in_one_line() -> None:
    res = shortflow("flows", str(SAMPLE), "--snapshots", "5")
    assert res.returncode == 2 and res.stdout == ""
    lines = errors(res.stderr)
    assert len(lines) == 1 and "--snapshots" in lines[0], res.stderr
    assert "--snapshots" not in shortflow("flows", "--help").stdout


# --- progress bars: on a terminal only ------------------------------------------------------

_BAR = re.compile(r"\[\d\d:\d\d[<,]")  # tqdm's "[00:00<?, ?B/s]" or "[00:00, ? pkt/s]"


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    copy = tmp_path / "copy.pcap"
    copy.write_bytes(SAMPLE.read_bytes())
    for extra in ([], ["--engine", "reference"], [str(copy), "--jobs", "2"]):
        res = shortflow("featurize", str(SAMPLE), *extra, "-o", str(tmp_path / "o.csv"))
        assert res.returncode == 0, res.stderr
        assert not _BAR.search(res.stderr) and "\r" not in res.stderr, (extra, res.stderr)
        assert "wrote" in res.stderr  # the summary still comes


def _stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run shortflow with its stderr on a pseudo-terminal; return (exit code, what it
    wrote there)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    # a terminal of 24 x 100 (a new pty is 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "classifier.cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
    finally:
        os.close(master)
        code = proc.wait(timeout=120)
    return code, seen.decode("utf-8", "replace")


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_progress_bar_on_a_terminal(tmp_path: Path, engine: str) -> None:
    code, text = _stderr_on_a_terminal(
        "featurize", str(SAMPLE), "--engine", engine, "-o", str(tmp_path / "o.csv")
    )
    assert code == 0, text
    assert _BAR.search(text) and "sample.pcap" in text, text
    code, text = _stderr_on_a_terminal(
        "featurize", str(SAMPLE), "--engine", engine, "-q", "-o", str(tmp_path / "o.csv")
    )
    assert code == 0 and not _BAR.search(text), text


def test_readme_says_how_to_reach_shortflow_after_make() -> None:
    """``make demo`` installs into .venv: the README's opening says to activate it or to
    call .venv/bin/shortflow, before its first bare ``shortflow`` command."""
    text = (ROOT / "README.md").read_text()
    first_command = text.index("\nshortflow ")
    opening = text[:first_command]
    assert "make demo" in opening and ". .venv/bin/activate" in opening
    assert ".venv/bin/shortflow" in opening
