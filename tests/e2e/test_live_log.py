"""A real `shortflow live` (dry-run, shipped model) on the router of a client / router /
server topology while the client sends UDP to the server: it logs a summary line every
``--summary-every`` seconds and one at exit on SIGTERM; with ``-q`` it logs none of them.
A policy's MAC rules find the client through the router's neighbour table (DNS sinkhole).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Topology, ask_dns, requires_netns

pytestmark = [requires_netns, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
API_PORT = 18732
SUMMARY = re.compile(
    r"^shortflow: INFO: (exit )?summary: up \d+ s; packets (\d+) \(received "
    r"\d+, dropped \d+ = \d+\.\d\d %\); flows open \d+; sessions open \d+, "
    r"judged \d+: .*; flow verdicts \d+: .*; blocks active \d+, made \d+ "
    r"\(mode dry-run\)$"
)


# 50 UDP datagrams to the server, 0.1 s apart
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(50):
    s.sendto(b"x" * 200, (sys.argv[1], 9999))
    time.sleep(0.1)
"""


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology("sf-livelog") as t:
        yield t


def _live(topo: Topology, tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "live.log"
    argv = [
        sys.executable,
        "-m",
        "classifier.cli",
        "live",
        "--iface",
        topo.iface["router.client"],
        "--enforce",
        "dry-run",
        "--summary-every",
        "2",
        "--audit-log",
        str(tmp / "audit.jsonl"),
        "--api",
        f"127.0.0.1:{API_PORT}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHORTFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = topo.popen(
        topo.router_ns, argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )
    deadline = time.monotonic() + 240  # kernels may compile just in time
    while (
        topo.run(
            topo.router_ns,
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                f"http://127.0.0.1:{API_PORT}/v1/health",
            ],
            check=False,
        ).returncode
        != 0
    ):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc, log


def _run(topo: Topology, tmp: Path, *extra: str) -> list[str]:
    """Start live mode, send UDP through the router for ~5 s, stop it with SIGTERM; its
    log."""
    proc, log = _live(topo, tmp, *extra)
    try:
        # it ran itself again (same process) with Python's objects on glibc's malloc
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"PYTHONMALLOC=malloc" in environ, environ
        topo.run(topo.client_ns, [sys.executable, "-c", SEND, topo.addr["server"]], timeout=30)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text, text
    return text.splitlines()


def test_summary_every_few_seconds_and_at_exit(topo: Topology, tmp_path: Path) -> None:
    lines = _run(topo, tmp_path)
    assert any(
        x.startswith("shortflow: live on to-client (capture afpacket, enforcement dry-run")
        for x in lines
    ), lines
    summaries = [x for x in lines if "summary:" in x]
    for line in summaries:
        assert SUMMARY.match(line), line
    periodic = [x for x in summaries if ": summary:" in x]
    exits = [x for x in summaries if "exit summary:" in x]
    assert len(periodic) >= 2, lines  # 5 s of traffic, one every 2 s
    assert len(exits) == 1 and summaries[-1] == exits[0], lines
    exit_packets = int(SUMMARY.match(exits[0]).group(2))  # type: ignore[union-attr]
    assert exit_packets >= 40  # the 50 datagrams seen on to-client (a few may be late)


def test_quiet_logs_no_summary(topo: Topology, tmp_path: Path) -> None:
    lines = _run(topo, tmp_path, "-q")
    assert not any("summary" in x or "live on" in x or "INFO" in x for x in lines), lines


def test_policy_mac_rules_find_the_client_in_the_routers_neighbour_table(
    topo: Topology, tmp_path: Path
) -> None:
    """A policy that covers only the client's MAC address: its query for a TikTok name is
    sinkholed (the router learnt its MAC when it asked). Reloaded (SIGHUP) to cover only
    another device, the same query is forwarded upstream (where nothing answers)."""
    mac = topo.run(topo.client_ns, ["cat", f"/sys/class/net/{topo.iface['client']}/address"])
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mode = "nft"\n[clients]\nonly = ["{mac.stdout.strip()}"]\n')
    router = topo.addr["router.client"]
    proc, log = _live(
        topo,
        tmp_path,
        *("--enforce", "nft", "--policy", str(policy)),
        *("--dns-listen", f"{router}:53", "--dns-upstream", topo.addr["server"]),
    )
    try:
        assert ask_dns(topo, router, "v16m.tiktokcdn.com", timeout=2) == "0.0.0.0"
        policy.write_text('mode = "nft"\n[clients]\nonly = ["02:77:00:00:00:99"]\n')
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reloaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        answer = ask_dns(topo, router, "v16m.tiktokcdn.com", timeout=2)
        assert answer.startswith(("no answer", "SERVFAIL")), (answer, log.read_text())
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
