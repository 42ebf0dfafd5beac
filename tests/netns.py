"""Network namespaces for tests: the lab's topology with the tests' layout, a scratch netns.

The namespaces, links, routes and cleanup are :mod:`training.lab.topology`'s (one
implementation for the lab and the tests); this module holds what is test-specific: the
tests' addresses and interface names, the skip marker, the ``topology`` fixture, a
scratch namespace and :meth:`Topology.wait_listening`.

Everything lives in namespaces the test creates and removes; addresses are in 10.77.0.0/16;
no interface or route leads out of the topology (the router has no uplink, client and
server only have a route to each other's subnet via the router). IPv6 is off in the
namespaces, so nothing but the 10.77 addresses ever appears.

Typical use::

    from tests.netns import Topology, requires_netns

    @requires_netns
    def test_something() -> None:
        with Topology("sf-mytest") as topo:
            server = topo.popen(topo.server_ns, [sys.executable, "-m", "http.server",
                                "--bind", topo.addr["server"], "8080"])
            topo.wait_listening(topo.server_ns, 8080)
            out = topo.run(topo.client_ns, ["curl", "-sS", f"http://{topo.addr['server']}:8080/"])

or with the pytest fixture ``topology`` (import it into the test module or a conftest).

Layout::

    client ns            router ns                          server ns
    eth0 10.77.1.2 <-> to-client 10.77.1.1 | to-server 10.77.2.1 <-> eth0 10.77.2.2

``Topology.addr`` keys: ``"client"``, ``"router.client"``, ``"router.server"``, ``"server"``;
``Topology.iface`` has the same keys. Namespace names are ``sf-<name>-<pid>-<tag>-{c,r,s}``,
never ``sf-lab-...`` (the lab's :func:`~training.lab.topology.cleanup_stale` leaves them
alone); leaving the ``with`` block (also when building fails half-way) stops the
processes started with ``popen``, kills whatever else runs in the namespaces and deletes
them. Commands that fail raise :class:`~training.lab.topology.LabError`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from training.lab.topology import (
    NS_PREFIX,
    LabTopology,
    Layout,
    add_namespace,
    delete_namespace,
    namespace_name,
    run_in,
)

__all__ = [
    "TEST_LAYOUT",
    "ask_dns",
    "Topology",
    "netns_available",
    "requires_netns",
    "scratch_netns",
    "topology",
    "run_in",
]

#: The tests' addresses and interfaces; every offload off; only ``ip`` required.
TEST_LAYOUT = Layout(
    addr={
        "client": "10.77.1.2",
        "router.client": "10.77.1.1",
        "router.server": "10.77.2.1",
        "server": "10.77.2.2",
    },
    iface={
        "client": "eth0",
        "router.client": "to-client",
        "router.server": "to-server",
        "server": "eth0",
    },
    default_routes=False,
    offloads=("tso", "gso", "gro", "lro", "tx", "rx"),
    tools=("ip",),
)


def netns_available() -> bool:
    """True when this process can create network namespaces (root and ``ip`` present)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


requires_netns = pytest.mark.skipif(
    not netns_available(), reason="needs root and iproute2 to create network namespaces"
)


def _prefix(name: str) -> str:
    """``sf-<name>-`` from a test's name (cleaned up, never the lab's ``sf-lab-``)."""
    clean = re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-") or "sf"
    if not clean.startswith("sf-"):
        clean = "sf-" + clean
    clean = clean[:40].rstrip("-") + "-"
    return "sf-t" + clean[2:] if clean.startswith(NS_PREFIX) else clean


# one A query; prints the address answered, the error code's name, or why none came
_ASK_DNS = """
import dnslib, sys
q = dnslib.DNSRecord.question(sys.argv[2])
try:
    r = dnslib.DNSRecord.parse(q.send(sys.argv[1], 53, timeout=float(sys.argv[3])))
    print(r.a.rdata if r.rr else dnslib.RCODE[r.header.rcode])
except OSError as exc:
    print("no answer:", type(exc).__name__)
"""


def ask_dns(topo: LabTopology, server: str, name: str, timeout: float = 3.0) -> str:
    """An A query for ``name`` from ``topo``'s client namespace to ``server`` port 53: the
    address answered, the error code's name (``SERVFAIL``), or ``no answer: ...`` when
    nothing came within ``timeout`` seconds."""
    argv = [sys.executable, "-c", _ASK_DNS, server, name, str(timeout)]
    return str(topo.run(topo.client_ns, argv, timeout=timeout + 27).stdout).strip()


@contextmanager
def scratch_netns(prefix: str = "sf-scratch") -> Iterator[str]:
    """Yield the name of a fresh, empty network namespace (only ``lo``, up); delete it after."""
    name = namespace_name(_prefix(prefix))
    add_namespace(name)
    try:
        yield name
    finally:
        delete_namespace(name)


class Topology(LabTopology):
    """The lab's client <-> router <-> server topology with :data:`TEST_LAYOUT`, named after
    ``name``."""

    def __init__(self, name: str = "sf-topo") -> None:
        super().__init__(TEST_LAYOUT, prefix=_prefix(name))

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


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A fresh :class:`Topology` per test, named after the test; skipped when not root."""
    if not netns_available():
        pytest.skip("needs root and iproute2 to create network namespaces")
    name = "sf-" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[:16]
    with Topology(name) as topo:
        yield topo
