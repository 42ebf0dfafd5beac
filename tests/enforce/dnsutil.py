"""Test helpers: a real upstream DNS server (dnsmasq) on loopback, and a tiny query client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import DNSRecord

__all__ = ["free_udp_port", "dnsmasq_upstream", "query", "LAB_ADDRESS"]

LAB_ADDRESS = "10.77.0.9"


def free_udp_port(host: str) -> int:
    """A UDP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def dnsmasq_upstream(
    host: str, *, netns: str | None = None, extra: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """Run dnsmasq on ``host`` answering ``*.lab.test`` with 10.77.0.9 and each name of
    ``extra`` (and its subdomains) with its address; nothing else (no upstream, no hosts
    file). Yield its (host, port); stop it afterwards."""
    exe = shutil.which("dnsmasq")
    assert exe is not None, "dnsmasq is not installed"
    port = free_udp_port(host) if netns is None else 5353
    argv = [
        exe,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        f"--address=/lab.test/{LAB_ADDRESS}",
        f"--port={port}",
        f"--listen-address={host}",
        "--bind-interfaces",
        "--pid-file=",
        "--log-facility=-",
        *(f"--address=/{name}/{addr}" for name, addr in (extra or {}).items()),
    ]
    if os.geteuid() == 0:
        argv.append("--user=root")
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:  # wait until it answers
            try:
                if netns is None:
                    query("probe.lab.test", (host, port), timeout=0.2)
                else:
                    time.sleep(0.3)
                break
            except TimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dnsmasq upstream did not start") from None
        yield (host, port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def query(name: str, server: tuple[str, int], qtype: str = "A", timeout: float = 2.0) -> DNSRecord:
    """Send one query over UDP and return the parsed answer; TimeoutError if none."""
    q = DNSRecord.question(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q.pack(), server)
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, _ = s.recvfrom(65535)
            except TimeoutError:
                raise TimeoutError(f"no answer for {name} from {server}") from None
            ans = DNSRecord.parse(data)
            if ans.header.id == q.header.id:
                return ans
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching answer for {name}")
