"""`shortflow blocks ...` and `shortflow policy ...` against a real API server with a real
dry-run live state (Enforcer + AuditLog + a policy file)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from classifier.api import Settings
from classifier.enforce.audit import AuditLog
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import PolicyHolder
from classifier.live.state import LiveState
from tests.api.conftest import TOKEN, RunningServer, ServerFactory, make_live

POLICY = 'mode = "dry-run"\nblock_seconds = 120\n'


@pytest.fixture(scope="module")
def control(
    serve: ServerFactory, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Path]]:
    directory = tmp_path_factory.mktemp("control")
    policy = directory / "policy.toml"
    policy.write_text(POLICY)
    audit = AuditLog(directory / "audit.jsonl", fsync=False)
    holder = PolicyHolder(policy)
    enforcer = Enforcer("dry-run", None, audit, holder)
    srv = serve(
        Settings(model_dir=model_dir, api_token=SecretStr(TOKEN)), LiveState(enforcer, holder)
    )
    try:
        yield srv, policy
    finally:
        enforcer.close()
        audit.close()


def _run(*args: str, url: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHORTFLOW_API")}
    if token is not None:
        env["SHORTFLOW_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "classifier.cli", *args, "--api", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_blocks_add_list_remove(control: tuple[RunningServer, Path]) -> None:
    srv, _ = control
    run = _run("blocks", "list", url=srv.url)
    assert run.returncode == 0, run.stderr
    assert "(no blocks in force)" in run.stdout
    run = _run(
        "blocks",
        "add",
        "10.77.1.2",
        "10.77.2.2",
        "--port",
        "443",
        "--proto",
        "udp",
        "--seconds",
        "60",
        url=srv.url,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("would block (dry-run) 10.77.1.2 -> 10.77.2.2:443/udp")
    block_id = run.stdout.split()[-1]
    run = _run("blocks", "list", url=srv.url)
    assert block_id in run.stdout and "dry-run" in run.stdout and "10.77.2.2:443/udp" in run.stdout
    assert _run("blocks", "remove", block_id, url=srv.url).stdout == f"lifted {block_id}\n"
    again = _run("blocks", "remove", block_id, url=srv.url)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"shortflow: error: DELETE /v1/live/blocks/{block_id}: "
        f"404 no block {block_id!r} is in force"
    )
    bad = _run("blocks", "add", "10.77.1.2", "10.77.2.2", "--port", "443", url=srv.url)
    assert bad.returncode == 2 and "--port and --proto together" in bad.stderr


def test_token_and_reachability_errors_are_one_line(
    control: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    srv, _ = control
    run = _run("blocks", "list", url=srv.url, token="wrong-token")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert ": 401 " in run.stderr
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    run = _run("blocks", "list", "--token-file", str(token_file), url=srv.url, token=None)
    assert run.returncode == 0, run.stderr
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    run = _run("policy", "show", url=closed)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "cannot reach shortflow live" in run.stderr and "--api" in run.stderr


def test_policy_reload_reads_the_file_again(control: tuple[RunningServer, Path]) -> None:
    srv, policy = control
    run = _run("policy", "show", url=srv.url)
    assert run.returncode == 0 and '"block_seconds": 120' in run.stdout
    policy.write_text(POLICY.replace("120", "900"))
    run = _run("policy", "reload", url=srv.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("policy reloaded: mode dry-run")
    assert '"block_seconds": 900' in _run("policy", "show", url=srv.url).stdout
    policy.write_text("mode = 'sideways'\n")
    run = _run("policy", "reload", url=srv.url)
    assert run.returncode == 2 and ": 422 " in run.stderr and "mode" in run.stderr
    assert '"block_seconds": 900' in _run("policy", "show", url=srv.url).stdout  # kept


def test_policy_reload_without_a_policy_file(
    serve: ServerFactory, model_dir: Path, tmp_path: Path
) -> None:
    parts, close = make_live(tmp_path)
    try:
        srv = serve(Settings(model_dir=model_dir, api_token=SecretStr(TOKEN)), parts.state)
        run = _run("policy", "reload", url=srv.url)
        assert run.returncode == 2
        assert run.stderr.strip() == (
            "shortflow: error: POST /v1/policy:reload: 422 live "
            "mode runs without --policy: there is no policy file "
            "to reload"
        )
    finally:
        close()
