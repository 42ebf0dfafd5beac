"""Network namespaces for the lab and the tests: client, router and server joined by veths.

```
 client ns            router ns                               server ns
 c0 10.77.10.2 --- r0 10.77.10.1 | r1 10.77.20.1 --- s0 10.77.20.2 + service addresses
                   (capture here)  (delay line, shaping, drop)
```

That is the lab's :data:`LAB_LAYOUT`; the tests build the same three namespaces with their
own :class:`Layout` (``tests/netns.py``). No namespace has a route out of 10.77.0.0/16: the
only links are the two veth pairs, IPv6 is off. Every namespace name is ``PREFIX<pid>-<tag>``
(the creating process id and a random tag), so parallel runs do not collide and
:func:`cleanup_stale` removes only the lab's namespaces whose creator is gone.
:class:`LabTopology` is a context manager that removes its processes and namespaces on exit,
also on exceptions and Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from classifier.errors import ShortflowError

__all__ = [
    "LabError",
    "LabTopology",
    "Layout",
    "LAB_LAYOUT",
    "LAB_TOOLS",
    "CLIENT_IP",
    "ROUTER_CLIENT_IP",
    "ROUTER_SERVER_IP",
    "SERVER_IP",
    "CLIENT_NET",
    "SERVER_NET",
    "DNS_IP",
    "CALL_IP",
    "CALL_PORT",
    "NAMES",
    "MTU",
    "CLIENT_IF",
    "ROUTER_CLIENT_IF",
    "ROUTER_SERVER_IF",
    "SERVER_IF",
    "NS_PREFIX",
    "require_root",
    "run_in",
    "namespace_name",
    "add_namespace",
    "delete_namespace",
    "cleanup_stale",
    "wait_for_marker",
    "child_env",
    "repo_root",
]

_log = logging.getLogger(__name__)

NS_PREFIX = "sf-lab-"
MTU = 1500
CLIENT_NET = "10.77.10.0/24"
SERVER_NET = "10.77.20.0/24"
CLIENT_IP = "10.77.10.2"
ROUTER_CLIENT_IP = "10.77.10.1"
ROUTER_SERVER_IP = "10.77.20.1"
SERVER_IP = "10.77.20.2"
DNS_IP = "10.77.20.53"
CALL_IP = "10.77.20.50"
CALL_PORT = 3478
CLIENT_IF = "c0"
ROUTER_CLIENT_IF = "r0"
ROUTER_SERVER_IF = "r1"
SERVER_IF = "s0"

#: Every name the lab DNS server answers, with the server address it resolves to.
NAMES: dict[str, str] = {
    "rr3---sn-lab.googlevideo.com": "10.77.20.10",
    "rr1---sn-lab.googlevideo.com": "10.77.20.11",
    "rr5---sn-lab.googlevideo.com": "10.77.20.12",
    "youtubei-lab.googleapis.com": "10.77.20.13",
    "scontent-lab.cdninstagram.com": "10.77.20.20",
    "scontent-lab2.cdninstagram.com": "10.77.20.21",
    "i-lab.instagram.com": "10.77.20.22",
    "v16-lab.tiktokcdn.com": "10.77.20.30",
    "v19-lab.tiktokcdn.com": "10.77.20.31",
    "api-lab.tiktokv.com": "10.77.20.32",
    "www.lab-web.test": "10.77.20.40",
    "static.lab-web.test": "10.77.20.41",
    "cdn.lab-web.test": "10.77.20.42",
    "relay-lab.call.test": CALL_IP,
}

#: The commands the lab needs: namespaces, shaping, rules, capture, offloads.
LAB_TOOLS = ("ip", "tc", "nft", "tcpdump", "ethtool")


@dataclass(frozen=True)
class Layout:
    """Addresses and interface names of one topology, and what building it needs.

    ``addr`` and ``iface`` are keyed ``client``, ``router.client``, ``router.server`` and
    ``server``: the /24 address of each veth end and its interface name. ``server_extra``
    are more addresses on the server's interface. ``default_routes`` sends everything the
    client and the server do not reach directly to the router; otherwise they only have a
    route to each other's /24. ``offloads`` are the ethtool features switched off on every
    veth (so captures show real packet sizes); ``tools`` the commands
    :meth:`LabTopology.open` requires.
    """

    addr: Mapping[str, str]
    iface: Mapping[str, str]
    server_extra: tuple[str, ...] = ()
    default_routes: bool = True
    offloads: tuple[str, ...] = ("tso", "gso", "gro")
    tools: tuple[str, ...] = LAB_TOOLS


#: The lab's layout (the drawing above), with every service address on the server.
LAB_LAYOUT = Layout(
    addr={
        "client": CLIENT_IP,
        "router.client": ROUTER_CLIENT_IP,
        "router.server": ROUTER_SERVER_IP,
        "server": SERVER_IP,
    },
    iface={
        "client": CLIENT_IF,
        "router.client": ROUTER_CLIENT_IF,
        "router.server": ROUTER_SERVER_IF,
        "server": SERVER_IF,
    },
    server_extra=tuple(sorted(set(NAMES.values()) | {DNS_IP})),
)


class LabError(ShortflowError):
    """The lab could not build its namespaces or run one of its processes."""


def require_root(tools: Sequence[str] = LAB_TOOLS) -> None:
    """Check namespaces can be built here.

    Raises:
        LabError: not root, or one of ``tools`` (default: the lab's) is missing.
    """
    if os.geteuid() != 0:
        raise LabError("the traffic lab needs root (network namespaces); run it as root")
    for tool in tools:
        if shutil.which(tool) is None:
            raise LabError(f"the traffic lab needs the '{tool}' command; install it")


def run_in(
    ns: str | None,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell) to its end in namespace ``ns`` (``None``: here); output captured.

    Raises:
        LabError: it exited non-zero and ``check`` is true.
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
    """
    full = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"'{' '.join(full)}' failed: {msg[-1] if msg else proc.returncode}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespace_name(prefix: str) -> str:
    """A fresh namespace name: ``prefix``, this process id and a random tag."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"


def add_namespace(name: str) -> None:
    """Create namespace ``name`` with ``lo`` up and IPv6 off (deleted again on failure).

    Raises:
        LabError: a command failed.
    """
    run_in(None, ["ip", "netns", "add", name])
    try:
        run_in(name, ["ip", "link", "set", "lo", "up"])
        for key in ("all", "default"):
            run_in(name, ["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"])
    except BaseException:
        delete_namespace(name)
        raise


def delete_namespace(name: str) -> None:
    """Kill every process left in namespace ``name``, then delete it (a failure is logged)."""
    _kill_ns_pids(name)
    res = run_in(None, ["ip", "netns", "del", name], check=False)
    if res.returncode != 0:
        _log.warning("could not delete namespace %s: %s", name, res.stderr.strip())


def cleanup_stale() -> list[str]:
    """Remove lab namespaces left by lab processes that no longer exist.

    Only names ``sf-lab-<pid>-...`` whose creating pid is dead are touched (the tests'
    namespaces have other prefixes). Returns the removed names.
    """
    removed: list[str] = []
    listing = run_in(None, ["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NS_PREFIX):
            continue
        parts = name[len(NS_PREFIX) :].split("-")
        if not parts or not parts[0].isdigit() or _pid_alive(int(parts[0])):
            continue
        delete_namespace(name)
        removed.append(name)
    return removed


def _kill_ns_pids(ns: str) -> None:
    out = run_in(None, ["ip", "netns", "pids", ns], check=False).stdout
    for tok in out.split():
        if tok.isdigit() and int(tok) != os.getpid():
            try:
                os.kill(int(tok), signal.SIGKILL)
            except ProcessLookupError:
                pass


class LabTopology:
    """Three namespaces (client, router, server) with offload-free veths and no route out.

    ``layout`` says where the addresses and interfaces go (default: the lab's); namespace
    names start with ``prefix``. Use as a context manager; :meth:`close` stops every
    process started through :meth:`popen` and deletes the namespaces.

    Raises:
        LabError: on entry, when not root, a tool is missing or a setup command fails.
    """

    def __init__(self, layout: Layout = LAB_LAYOUT, prefix: str = NS_PREFIX) -> None:
        self.layout = layout
        self.addr = layout.addr
        self.iface = layout.iface
        self.tag = namespace_name(prefix)
        self.client_ns = f"{self.tag}-c"
        self.router_ns = f"{self.tag}-r"
        self.server_ns = f"{self.tag}-s"
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LabTopology:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def namespaces(self) -> tuple[str, str, str]:
        """The client, router and server namespace names."""
        return (self.client_ns, self.router_ns, self.server_ns)

    def open(self) -> None:
        """Create namespaces, links, addresses and routes.

        Raises:
            LabError: not root, a tool is missing, or a command failed (all undone).
        """
        require_root(self.layout.tools)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in self.namespaces:
            add_namespace(ns)
            self._created.append(ns)
        c, r, s = self.namespaces
        self._veth(c, "client", r, "router.client")
        self._veth(s, "server", r, "router.server")
        for ns, end in ((c, "client"), (r, "router.client"), (r, "router.server"), (s, "server")):
            self._configure(ns, end)
        for ip in self.layout.server_extra:
            self.run(s, ["ip", "addr", "add", f"{ip}/24", "dev", self.iface["server"]])
        self._route(c, via="router.client", towards="server")
        self._route(s, via="router.server", towards="client")
        self.run(r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        _log.info("lab topology %s up", self.tag)

    def _veth(self, ns: str, end: str, peer_ns: str, peer_end: str) -> None:
        """A veth pair: ``end`` made in ``ns``, its peer ``peer_end`` moved to ``peer_ns``."""
        link = ["ip", "link", "add", "name", self.iface[end], "type", "veth"]
        self.run(ns, [*link, "peer", "name", self.iface[peer_end], "netns", peer_ns])

    def _configure(self, ns: str, end: str) -> None:
        """MTU, address and offloads of one veth end, then up."""
        dev = self.iface[end]
        self.run(ns, ["ip", "link", "set", dev, "mtu", str(MTU)])
        self.run(ns, ["ip", "addr", "add", f"{self.addr[end]}/24", "dev", dev])
        self._offloads_off(ns, dev)
        self.run(ns, ["ip", "link", "set", dev, "up"])

    def _offloads_off(self, ns: str, dev: str) -> None:
        if not self.layout.offloads:
            return
        if shutil.which("ethtool") is None:
            _log.warning("ethtool missing: offloads stay on for %s/%s", ns, dev)
            return
        features = [word for name in self.layout.offloads for word in (name, "off")]
        self.run(ns, ["ethtool", "-K", dev, *features])

    def _route(self, ns: str, *, via: str, towards: str) -> None:
        """Route from ``ns`` through the router: everything, or only the ``towards`` /24."""
        dest = "default"
        if not self.layout.default_routes:
            dest = str(ipaddress.ip_interface(f"{self.addr[towards]}/24").network)
        self.run(ns, ["ip", "route", "add", dest, "via", self.addr[via]])

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._procs):
            self.stop(proc)
        for ns in reversed(self._created):
            try:
                delete_namespace(ns)
            except Exception:  # noqa: BLE001 - cleanup must go on
                _log.warning("could not delete namespace %s", ns, exc_info=True)
        self._created.clear()
        _log.info("lab topology %s removed", self.tag)

    # -- commands --------------------------------------------------------------------------
    def run(
        self,
        ns: str,
        argv: Sequence[str],
        check: bool = True,
        *,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside namespace ``ns`` of this topology (see :func:`run_in`).

        Raises:
            LabError: the command exited non-zero and ``check`` is true.
            ValueError: ``ns`` is not one of this topology's namespaces.
        """
        self._own(ns)
        return run_in(ns, argv, check=check, timeout=timeout, input=input)

    def popen(
        self, ns: str, argv: Sequence[str], log: Path | None = None, **options: Any
    ) -> subprocess.Popen[Any]:
        """Start a long-running process inside ``ns`` in its own session; :meth:`close`
        stops it.

        Its stdout and stderr go to ``log`` (appended) or nowhere, its stdin is empty;
        ``options`` are more keyword arguments of :class:`subprocess.Popen` (``env``,
        ``cwd``, or ``stdout``, ``text`` and the like to override that).

        Raises:
            ValueError: ``ns`` is not one of this topology's namespaces.
        """
        self._own(ns)
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        options.setdefault("stdout", out)
        options.setdefault("stderr", subprocess.STDOUT if log is not None else subprocess.DEVNULL)
        options.setdefault("stdin", subprocess.DEVNULL)
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], start_new_session=True, **options
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self._procs.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait_s: float = 5.0
    ) -> int | None:
        """Stop one process started by :meth:`popen` (signal, wait, then SIGKILL)."""
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def _own(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of this topology")


def _describe(proc: subprocess.Popen[Any]) -> str:
    args = proc.args
    if isinstance(args, (list, tuple)):
        words = [str(a) for a in args[4:]]  # skip "ip netns exec NS"
        mods = [w for w in words if w.startswith("training.")]
        return mods[0] if mods else (words[0] if words else "process")
    return str(args)


def wait_for_marker(proc: subprocess.Popen[Any], log: Path, marker: str, timeout_s: float) -> None:
    """Wait until ``log`` (the process's output file) contains ``marker``.

    Raises:
        LabError: the process exited or ``timeout_s`` passed first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if marker in text:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = text.strip().splitlines()
            what = "exited early" if proc.poll() is not None else "timed out"
            raise LabError(f"{_describe(proc)} {what}: {tail[-1] if tail else 'no output'}")
        time.sleep(0.05)


def repo_root() -> Path:
    """The directory that holds the ``training`` package (for child processes)."""
    return Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """The environment for lab child processes: ours, with the repo on ``PYTHONPATH``."""
    env = dict(os.environ)
    root = str(repo_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
