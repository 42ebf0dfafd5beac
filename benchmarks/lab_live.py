"""`shortflow live` in the lab's router namespace, for the benchmarks (``live``, ``soak``).

One place for the command line (AF_PACKET or NFLOG on the router's client-facing interface,
the DNS forwarder towards the lab's DNS server, a policy file, an audit log, the API on a
fresh loopback port of the router namespace) and for reading the process from outside
(its API through ``curl`` in the namespace, Prometheus lines, ``/proc/PID/status``).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from training.lab.topology import (
    DNS_IP,
    ROUTER_CLIENT_IF,
    ROUTER_CLIENT_IP,
    LabTopology,
    child_env,
    repo_root,
    wait_for_marker,
)

__all__ = [
    "LiveRun",
    "POLICY",
    "start_live",
    "api",
    "metric",
    "status_kb",
    "cpu_seconds",
    "fd_count",
]

_ports = itertools.count(18081)

#: The benchmarks' decoder names and `shortflow live --engine`'s.
_ENGINES = {"batch": "fast", "python": "reference"}
#: The benchmarks' policy: MODE, blocks of BLOCK seconds, 2 of 3 verdicts at 0.5 agree.
POLICY = 'mode = "{mode}"\nblock_seconds = {block}\n[agreement]\nk = 2\nn = 3\nthreshold = 0.5\n'


@dataclass(frozen=True)
class LiveRun:
    """A started `shortflow live`: the process (its pid is the live process itself: ``ip
    netns exec`` execs it), its audit log, output file, policy file and API port."""

    proc: subprocess.Popen[bytes]
    audit: Path
    log: Path
    policy: Path
    port: int


def start_live(
    topo: LabTopology,
    tmp: Path,
    mode: str,
    capture: str = "afpacket",
    decoder: str = "batch",
    before: Path | None = None,
    *,
    audit: Path | None = None,
    name: str | None = None,
    block_s: int = 60,
    extra_args: tuple[str, ...] = (),
) -> LiveRun:
    """Start `shortflow live --enforce MODE` in the router namespace and wait until it runs
    and its API answers. ``decoder`` batch or python (``--engine`` fast or reference);
    "before" runs the checkout ``before`` (code from before the option existed: its default
    path, no --engine). ``audit`` defaults to a fresh file
    per start; ``name`` names the output file (``live-NAME.log``, default the mode)."""
    port = next(_ports)
    audit = audit if audit is not None else tmp / f"audit-{mode}-{port}.jsonl"
    log = tmp / f"live-{name or mode}.log"
    policy = tmp / "policy.toml"
    policy.write_text(POLICY.format(mode=mode, block=block_s))
    root, env = repo_root(), child_env()
    if decoder == "before" and before is not None:
        root = before
        env["PYTHONPATH"] = str(before) + os.pathsep + env["PYTHONPATH"]
    argv = [
        sys.executable,
        "-m",
        "classifier.cli",
        "live",
        "--iface",
        ROUTER_CLIENT_IF,
        "--capture",
        capture,
        "--enforce",
        mode,
        "--policy",
        str(policy),
        "--audit-log",
        str(audit),
        "--dns-listen",
        f"{ROUTER_CLIENT_IP}:53",
        "--dns-upstream",
        DNS_IP,
        "--api",
        f"127.0.0.1:{port}",
        *extra_args,
    ]
    if decoder != "before":  # live's --engine: batch is fast, python is reference
        argv += ["--engine", _ENGINES.get(decoder, decoder)]
    proc = topo.popen(topo.router_ns, argv, log=log, env=env, cwd=root)
    wait_for_marker(proc, log, "live on", 60.0)
    for _ in range(50):  # the API thread starts after the marker
        probe = ["curl", "-s", "-o", "/dev/null", "--max-time", "1"]
        if (
            topo.run(
                topo.router_ns, [*probe, f"http://127.0.0.1:{port}/healthz"], check=False
            ).returncode
            == 0
        ):
            break
        time.sleep(0.2)
    return LiveRun(proc, audit, log, policy, port)


def api(
    topo: LabTopology, port: int, path: str, method: str = "GET", body: str | None = None
) -> str:
    """The body of an API call to the live process on ``port`` (curl in the router
    namespace; raises LabError when curl fails, e.g. the process is gone)."""
    argv = ["curl", "-sS", "--fail-with-body", "--max-time", "10", "-X", method]
    if body is not None:
        argv += ["-H", "content-type: application/json", "--data", body]
    return topo.run(topo.router_ns, [*argv, f"http://127.0.0.1:{port}{path}"]).stdout


def metric(text: str, name: str) -> float:
    """The value of Prometheus sample ``name`` (no labels) in ``text``; 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def status_kb(pid: int, field: str) -> int:
    """A ``VmRSS``-like field of /proc/PID/status, in kB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    """Open file descriptors of process ``pid`` (entries of /proc/PID/fd; -1 when gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1
