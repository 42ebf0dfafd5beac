"""Helpers the live-router end-to-end tests share: start `shortflow live` in the lab's router
namespace with the tests' defaults (``training.lab.live`` builds the command line), play a
lab session from the client namespace, read the ruleset, reach a port of the router
namespace from the test's own namespace.

Import only from tests that are skipped without the lab (``pytest.importorskip`` of
``training.lab.generate`` first).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.netns import ask_dns
from training.lab import live
from training.lab.scenarios import plan_session
from training.lab.topology import (
    ROUTER_CLIENT_IP,
    child_env,
    repo_root,
)

__all__ = [
    "ruleset",
    "without_shortflow",
    "start_live",
    "start_play",
    "play",
    "stop",
    "resolve",
    "nft_elements",
    "NetnsForward",
]


def ruleset(topo: Any) -> str:
    return str(topo.run(topo.router_ns, ["nft", "list", "ruleset"]).stdout)


def without_shortflow(text: str) -> str:
    out, skip = [], False
    for line in text.splitlines():
        if line.startswith("table inet shortflow"):
            skip = True
        elif skip and line == "}":
            skip = False
            continue
        if not skip:
            out.append(line)
    return "\n".join(out)


def start_live(
    the_lab: Any,
    tmp: Path,
    mode: str,
    block: int = 20,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """:func:`training.lab.live.start_live` with the tests' defaults (``-v``, live's own
    capture and engine, blocks of ``block`` s); the process and its audit log once it says
    it runs."""
    run = live.start_live(
        the_lab.topo, tmp, mode, block_s=block, verbose=True, extra_args=extra_args, env=env
    )
    return run.proc, run.audit


def start_play(
    the_lab: Any, tmp: Path, scenario: str, seed: int, seconds: float, dns: str = ROUTER_CLIENT_IP
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start playing a lab session from the client namespace: (process, result, log)."""
    plan = plan_session(scenario, seed, duration_s=seconds)
    plan_file = tmp / f"{scenario}-{seed}.plan.json"
    plan_file.write_text(plan.to_json())
    result = tmp / f"{scenario}-{seed}.result.json"
    log = tmp / f"{scenario}-{seed}.log"
    proc = the_lab.topo.popen(
        the_lab.topo.client_ns,
        [
            sys.executable,
            "-m",
            "training.lab.players",
            "--plan",
            str(plan_file),
            "--ca",
            str(the_lab.ca),
            "--result",
            str(result),
            "--dns",
            dns,
        ],
        log=log,
        env=child_env(),
        cwd=repo_root(),
    )
    return proc, result, log


def play(
    the_lab: Any, tmp: Path, scenario: str, seed: int, seconds: float, dns: str = ROUTER_CLIENT_IP
) -> dict[str, Any]:
    """Play a lab session to its end; its result."""
    proc, result, log = start_play(the_lab, tmp, scenario, seed, seconds, dns)
    proc.wait(timeout=seconds + 90)
    assert proc.returncode == 0, log.read_text()[-2000:]
    return dict(json.loads(result.read_text()))


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def resolve(the_lab: Any, name: str) -> str:
    """The router's DNS answer for ``name`` (an address or an error code's name)."""
    answer = ask_dns(the_lab.topo, ROUTER_CLIENT_IP, name)
    assert not answer.startswith("no answer"), answer
    return answer


def nft_elements(topo: Any) -> list[dict[str, Any]]:
    """The sets of shortflow's table that hold elements (the table must exist)."""
    listing = topo.run(topo.router_ns, ["nft", "-j", "list", "table", "inet", "shortflow"]).stdout
    return [
        s["set"] for s in json.loads(listing)["nftables"] if "set" in s and s["set"].get("elem")
    ]


_CLONE_NEWNET = 0x40000000


class NetnsForward:
    """A TCP port on 127.0.0.1 of the test's namespace that leads to ``port`` on 127.0.0.1
    of network namespace ``ns`` (so a browser here reaches a server there). Each
    connection is served by a thread that enters the namespace (``setns`` moves only the
    calling thread) and connects there."""

    def __init__(self, ns: str, port: int) -> None:
        self._ns_path = f"/run/netns/{ns}"
        self._port = port
        self._listen = socket.create_server(("127.0.0.1", 0))
        self.port = self._listen.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="netns-forward").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listen.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self._ns_path, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                conn.close()
                return
        finally:
            os.close(fd)
        try:
            upstream = socket.create_connection(("127.0.0.1", self._port), timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
        self._pump(conn, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listen.close()
