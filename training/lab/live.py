"""`shortflow live` in the lab's router namespace, for the benchmarks and the end-to-end tests.

One place for the command line: the capture on the router's client-facing interface, the
DNS forwarder towards the lab's DNS server, a policy file (2 of 3 verdicts at 0.5 agree),
an audit log, optionally the API on a loopback port of the router namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.lab.topology import (
    DNS_IP,
    ROUTER_CLIENT_IF,
    ROUTER_CLIENT_IP,
    LabTopology,
    child_env,
    repo_root,
    wait_for_marker,
)

__all__ = ["POLICY", "LiveRun", "start_live"]

#: The lab's policy: MODE, blocks of BLOCK seconds, 2 of 3 verdicts at 0.5 agree.
POLICY = 'mode = "{mode}"\nblock_seconds = {block}\n[agreement]\nk = 2\nn = 3\nthreshold = 0.5\n'


@dataclass(frozen=True)
class LiveRun:
    """A started `shortflow live`: the process (its pid is the live process itself: ``ip
    netns exec`` execs it), its audit log, output file, policy file and API port (or None)."""

    proc: subprocess.Popen[Any]
    audit: Path
    log: Path
    policy: Path
    port: int | None


def _live_argv(
    mode: str,
    policy: Path,
    audit: Path,
    *,
    capture: str | None = None,
    engine: str | None = None,
    api_port: int | None = None,
    verbose: bool = False,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The `shortflow live --enforce MODE` command line for the lab's router; ``capture``,
    ``engine`` and the API only when given (live's defaults otherwise)."""
    argv = [sys.executable, "-m", "classifier.cli", *(["-v"] if verbose else []), "live"]
    argv += ["--iface", ROUTER_CLIENT_IF, "--enforce", mode]
    argv += ["--policy", str(policy), "--audit-log", str(audit)]
    argv += ["--dns-listen", f"{ROUTER_CLIENT_IP}:53", "--dns-upstream", DNS_IP]
    if capture is not None:
        argv += ["--capture", capture]
    if api_port is not None:
        argv += ["--api", f"127.0.0.1:{api_port}"]
    if engine is not None:
        argv += ["--engine", engine]
    return [*argv, *extra_args]


def start_live(
    topo: LabTopology,
    tmp: Path,
    mode: str,
    *,
    block_s: int = 60,
    capture: str | None = None,
    engine: str | None = None,
    api_port: int | None = None,
    audit: Path | None = None,
    name: str | None = None,
    verbose: bool = False,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    checkout: Path | None = None,
) -> LiveRun:
    """Start `shortflow live --enforce MODE` in the router namespace and wait until it says
    it runs (and its API answers, with ``api_port``).

    The policy is ``tmp/policy-MODE.toml`` (blocks of ``block_s`` seconds); ``audit``
    defaults to ``tmp/audit-MODE[-PORT].jsonl``, the output file is ``tmp/live-NAME.log``
    (``name`` defaults to the mode). ``env`` adds to the lab's child environment;
    ``checkout`` runs the code of another checkout of the repository.

    Raises:
        LabError: live exited or did not start within 60 s.
    """
    policy = tmp / f"policy-{mode}.toml"
    policy.write_text(POLICY.format(mode=mode, block=block_s))
    port_part = f"-{api_port}" if api_port is not None else ""
    audit = audit if audit is not None else tmp / f"audit-{mode}{port_part}.jsonl"
    log = tmp / f"live-{name or mode}.log"
    argv = _live_argv(
        mode,
        policy,
        audit,
        capture=capture,
        engine=engine,
        api_port=api_port,
        verbose=verbose,
        extra_args=extra_args,
    )
    full_env = {**child_env(), **(env or {})}
    if checkout is not None:
        full_env["PYTHONPATH"] = str(checkout) + os.pathsep + full_env["PYTHONPATH"]
    cwd = checkout if checkout is not None else repo_root()
    proc = topo.popen(topo.router_ns, argv, log=log, env=full_env, cwd=cwd)
    wait_for_marker(proc, log, "live on", 60.0)
    if api_port is not None:
        _wait_api(topo, api_port)
    return LiveRun(proc, audit, log, policy, api_port)


def _wait_api(topo: LabTopology, port: int, tries: int = 50) -> None:
    """Give the API thread (it starts after the "live on" marker) up to ``tries`` x 0.2 s."""
    probe = ["curl", "-s", "-o", "/dev/null", "--max-time", "1"]
    url = f"http://127.0.0.1:{port}/healthz"
    for _ in range(tries):
        if topo.run(topo.router_ns, [*probe, url], check=False).returncode == 0:
            return
        time.sleep(0.2)
