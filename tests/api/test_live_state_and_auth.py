"""LiveState (real dry-run Enforcer + AuditLog), check_bind_safety and `shortflow serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from classifier.api import check_bind_safety
from classifier.api.auth import is_loopback
from classifier.cli import main as cli_main
from classifier.enforce.audit import read_audit
from classifier.errors import PolicyError, ShortflowError
from tests.api.conftest import make_live


def test_check_bind_safety() -> None:
    for host in ("127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind_safety(host, None, live=True)
    for host in ("0.0.0.0", "::", "10.77.1.1", "example.internal", ""):
        assert not is_loopback(host)
        with pytest.raises(ShortflowError, match="without an API token"):
            check_bind_safety(host, None, live=True)
        with pytest.raises(ShortflowError):
            check_bind_safety(host, "   ", live=True)
        check_bind_safety(host, "a-long-enough-token-123", live=True)
        check_bind_safety(host, None, live=False)


def test_live_state_flows_threads_and_cap(tmp_path: Path) -> None:
    parts, close = make_live(tmp_path)
    try:
        state = parts.state
        state.max_flows = 500

        def writer(t: int) -> None:
            for i in range(200):
                state.update_flow(
                    {
                        "proto": 6,
                        "client": f"10.77.1.{t}",
                        "client_port": i,
                        "server": "10.77.2.2",
                        "server_port": 443,
                    },
                    {"label": "other", "probability": float("nan")},
                )
                state.incr("packets")

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert state.counters_snapshot()["packets"] == 800
        assert state.counters_snapshot()["verdicts"] == 800
        flows = state.flows()
        assert len(flows) == state.flow_count() == 500  # capped, oldest forgotten
        assert flows[0]["verdict"]["probability"] is None  # NaN made JSON-safe
        first = flows[0]["key"]
        state.update_flow(first, {"label": "short-form", "probability": 0.9})
        again = [f for f in state.flows() if f["key"] == first][0]
        assert again["verdicts"] == 2 and again["verdict"]["label"] == "short-form"
        assert state.remove_flow(first) is True
        assert state.remove_flow(first) is False
    finally:
        close()


def test_live_state_blocks_and_policy(tmp_path: Path) -> None:
    parts, close = make_live(tmp_path)
    try:
        state = parts.state
        rec = state.block("10.77.1.2", "10.77.2.2", None, None, 30, "pair block")
        assert rec["dry_run"] and rec["port"] is None and rec["reason"] == "pair block"
        assert rec["expires"] - rec["created"] == pytest.approx(30, abs=1)
        assert [b["id"] for b in state.blocks()] == [rec["id"]]
        assert state.counters_snapshot()["blocks"] == 1
        assert state.policy()["block_seconds"] == 300  # restored after the manual block
        assert state.unblock(rec["id"]) and not state.unblock(rec["id"])
        actions = [e["action"] for e in read_audit(parts.audit_path)]
        assert actions == ["dry-run-block", "unblock"]

        state.set_policy_text('[allow]\nips = ["10.77.2.0/24"]\n')
        with pytest.raises(PolicyError, match="allowlist"):
            state.block("10.77.1.2", "10.77.2.9", 443, "tcp", 30, "x")
        with pytest.raises(PolicyError):
            state.set_policy_text("block_seconds = -5")
        assert state.policy()["allow"]["ips"] == ["10.77.2.0/24"]  # running policy stayed
        state.set_policy_text('mode = "off"')
        with pytest.raises(PolicyError, match="off"):
            state.block("10.77.1.2", "10.77.3.3", 443, "tcp", 30, "x")
        with pytest.raises(PolicyError):
            state.block("10.77.1.2", "10.77.3.3", 443, "tcp", 0, "x")
    finally:
        close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_runs_uvicorn(model_dir: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHORTFLOW_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "classifier.cli",
            "serve",
            "--port",
            str(port),
            "--model",
            str(model_dir),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, proc.stderr
        assert ready.json()["model"] == "api-test-model"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_serve_command_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "model.json" in capsys.readouterr().err
    monkeypatch.setenv("SHORTFLOW_MAX_UPLOAD_BYTES", "lots")
    assert cli_main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "max_upload_bytes" in err and err.count("\n") == 1
