"""Network-namespace helpers for tests: a client / router / server topology and a scratch netns.

Everything lives in namespaces the test creates and removes; addresses are in 10.77.0.0/16;
no interface or route leads out of the topology (the router has no uplink, client and
server only have a route to each other's subnet via the router). IPv6 is switched off in
the namespaces unless asked for, so nothing but the 10.77 addresses ever appears.

Typical use::

    from tests.netns import Topology, requires_netns

    @requires_netns
    def test_something() -> None:
        with Topology("sf-mytest") as topo:
            server = topo.popen(topo.server, [sys.executable, "-m", "http.server",
                                "--bind", topo.addr["server"], "8080"])
            topo.wait_listening(topo.server, 8080)
            out = topo.run(topo.client, ["curl", "-sS", f"http://{topo.addr['server']}:8080/"])

or with the pytest fixture ``topology`` (import it into the test module or a conftest).

Layout (defaults)::

    client ns            router ns                          server ns
    eth0 10.77.1.2 <-> to-client 10.77.1.1 | to-server 10.77.2.1 <-> eth0 10.77.2.2

``Topology.addr`` keys: ``"client"``, ``"router.client"``, ``"router.server"``, ``"server"``;
``Topology.iface`` has the same keys. Namespace names are ``<prefix>-<pid>-<n>-{c,r,s}``
so parallel runs never collide; :meth:`Topology.down` (also run by ``__exit__`` and when
:meth:`Topology.up` fails half-way) kills every process left in the namespaces and deletes
them.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import pytest

__all__ = [
    "Topology",
    "netns_available",
    "requires_netns",
    "scratch_netns",
    "topology",
    "run_in",
]

log = logging.getLogger(__name__)

_counter = itertools.count(1)
_OFFLOADS = ("tso", "gso", "gro", "lro", "tx", "rx")


def netns_available() -> bool:
    """True when this process can create network namespaces (root and ``ip`` present)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


requires_netns = pytest.mark.skipif(
    not netns_available(), reason="needs root and iproute2 to create network namespaces"
)


def _unique(prefix: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9-]", "-", prefix).strip("-") or "sf"
    if not clean.startswith("sf-"):
        clean = "sf-" + clean
    return f"{clean[:40]}-{os.getpid()}-{next(_counter)}"


def _argv(cmd: Sequence[str] | str) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def run_in(
    ns: str | None,
    cmd: Sequence[str] | str,
    *,
    timeout: float = 30.0,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (argv list, or a string split with shlex; no shell) in namespace ``ns``.

    ``ns=None`` runs it in the current namespace. Raises ``subprocess.CalledProcessError``
    when ``check`` and the command fails, ``subprocess.TimeoutExpired`` after ``timeout``.
    """
    argv = _argv(cmd)
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, argv, output=proc.stdout, stderr=proc.stderr
        )
    return proc


def _delete_ns(ns: str) -> None:
    """Kill whatever still runs in ``ns`` (processes our test started there), then delete it."""
    pids = run_in(None, ["ip", "netns", "pids", ns], check=False, timeout=10).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    res = run_in(None, ["ip", "netns", "del", ns], check=False, timeout=10)
    if res.returncode != 0 and ns in _list_ns():
        log.warning("could not delete netns %s: %s", ns, res.stderr.strip())


def _list_ns() -> list[str]:
    out = run_in(None, ["ip", "netns", "list"], check=False, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _new_ns(name: str, *, ipv6: bool) -> None:
    run_in(None, ["ip", "netns", "add", name])
    run_in(name, ["ip", "link", "set", "lo", "up"])
    if not ipv6:
        for key in ("all", "default"):
            run_in(name, ["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"])


@contextmanager
def scratch_netns(prefix: str = "sf-scratch", *, ipv6: bool = False) -> Iterator[str]:
    """Yield the name of a fresh, empty network namespace (only ``lo``, up); delete it after."""
    name = _unique(prefix)
    try:
        _new_ns(name, ipv6=ipv6)
        yield name
    finally:
        _delete_ns(name)


class Topology:
    """client <-> router <-> server namespaces joined by veth pairs, forwarding on in the router.

    Parameters: ``name_prefix`` (namespace names start with it, ``sf-`` is added if missing),
    ``client_net``/``server_net`` (the first three octets of the two /24s, inside 10.77),
    ``offloads_off`` (switch TSO/GSO/GRO/checksum offloads off on every veth with ethtool, so
    captures show real packet sizes), ``ipv6`` (leave IPv6 on; off by default).
    """

    def __init__(
        self,
        name_prefix: str = "sf-topo",
        *,
        client_net: str = "10.77.1",
        server_net: str = "10.77.2",
        offloads_off: bool = True,
        ipv6: bool = False,
    ) -> None:
        for net in (client_net, server_net):
            if not re.fullmatch(r"10\.77\.\d{1,3}", net) or int(net.split(".")[2]) > 255:
                raise ValueError(f"subnet {net!r} must look like 10.77.N (N in 0..255)")
        if client_net == server_net:
            raise ValueError("client_net and server_net must differ")
        base = _unique(name_prefix)
        self.client = f"{base}-c"
        self.router = f"{base}-r"
        self.server = f"{base}-s"
        self.client_net = client_net
        self.server_net = server_net
        self.offloads_off = offloads_off
        self.ipv6 = ipv6
        self.addr: dict[str, str] = {
            "client": f"{client_net}.2",
            "router.client": f"{client_net}.1",
            "router.server": f"{server_net}.1",
            "server": f"{server_net}.2",
        }
        self.iface: dict[str, str] = {
            "client": "eth0",
            "router.client": "to-client",
            "router.server": "to-server",
            "server": "eth0",
        }
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []

    @property
    def namespaces(self) -> tuple[str, str, str]:
        """(client, router, server) namespace names."""
        return (self.client, self.router, self.server)

    def up(self) -> Topology:
        """Create the namespaces, links, addresses and routes. Cleans up if anything fails."""
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for ns in self.namespaces:
            _new_ns(ns, ipv6=self.ipv6)
            self._created.append(ns)
        c, r, s = self.namespaces
        ifc = self.iface
        run_in(
            c,
            [
                "ip",
                "link",
                "add",
                "name",
                ifc["client"],
                "type",
                "veth",
                "peer",
                "name",
                ifc["router.client"],
                "netns",
                r,
            ],
        )
        run_in(
            s,
            [
                "ip",
                "link",
                "add",
                "name",
                ifc["server"],
                "type",
                "veth",
                "peer",
                "name",
                ifc["router.server"],
                "netns",
                r,
            ],
        )
        for ns, key in ((c, "client"), (r, "router.client"), (r, "router.server"), (s, "server")):
            run_in(ns, ["ip", "addr", "add", f"{self.addr[key]}/24", "dev", ifc[key]])
            run_in(ns, ["ip", "link", "set", ifc[key], "up"])
            if self.offloads_off:
                self._offloads_off(ns, ifc[key])
        run_in(r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        run_in(
            c, ["ip", "route", "add", f"{self.server_net}.0/24", "via", self.addr["router.client"]]
        )
        run_in(
            s, ["ip", "route", "add", f"{self.client_net}.0/24", "via", self.addr["router.server"]]
        )

    @staticmethod
    def _offloads_off(ns: str, dev: str) -> None:
        if shutil.which("ethtool") is None:
            log.warning("ethtool missing: offloads stay on for %s/%s", ns, dev)
            return
        for feature in _OFFLOADS:
            res = run_in(ns, ["ethtool", "-K", dev, feature, "off"], check=False)
            if res.returncode != 0:
                log.debug("ethtool -K %s %s off in %s: %s", dev, feature, ns, res.stderr.strip())

    def down(self) -> None:
        """Stop processes started with :meth:`popen`, then delete every namespace. Idempotent."""
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self._procs.clear()
        for ns in reversed(self._created):
            _delete_ns(ns)
        self._created.clear()

    def run(
        self,
        ns: str,
        cmd: Sequence[str] | str,
        *,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in one of the topology's namespaces (see :func:`run_in`)."""
        self._own(ns)
        return run_in(ns, cmd, timeout=timeout, check=check, input=input)

    def popen(self, ns: str, cmd: Sequence[str] | str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a background command in ``ns``; :meth:`down` stops it (its whole group).

        Keyword arguments go to :class:`subprocess.Popen` (default: output discarded).
        """
        self._own(ns)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        kwargs["start_new_session"] = True
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *_argv(cmd)], **kwargs)
        self._procs.append(proc)
        return proc

    def wait_listening(
        self, ns: str, port: int, *, proto: str = "tcp", timeout: float = 10.0
    ) -> None:
        """Wait until something listens on ``port`` in ``ns``; raise TimeoutError otherwise."""
        flag = "-lnt" if proto == "tcp" else "-lnu"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, ["ss", "-H", flag, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {proto}/{port} in {ns} after {timeout} s")

    def _own(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of this topology")

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A fresh :class:`Topology` per test, named after the test; skipped when not root."""
    if not netns_available():
        pytest.skip("needs root and iproute2 to create network namespaces")
    name = "sf-" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[:16]
    with Topology(name) as topo:
        yield topo
