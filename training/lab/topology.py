"""The lab's runtime network: client, router and server namespaces joined by veth pairs.

```
 client ns            router ns                               server ns
 c0 10.77.10.2 --- r0 10.77.10.1 | r1 10.77.20.1 --- s0 10.77.20.2 + service addresses
                   (capture here)  (delay line, shaping, drop)
```

No namespace has a route out of 10.77.0.0/16: the only links are the two veth pairs.
Every namespace name carries the creating process id and a random tag, so parallel runs do
not collide. :class:`LabTopology` is a context manager that removes its processes and
namespaces on exit, also on exceptions and Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from classifier.errors import ShortflowError

__all__ = [
    "LabError",
    "LabTopology",
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


class LabError(ShortflowError):
    """The lab could not build its namespaces or run one of its processes."""


def require_root() -> None:
    """Check the lab can run here.

    Raises:
        LabError: not root, or ``ip`` / ``tc`` / ``nft`` / ``tcpdump`` / ``ethtool`` missing.
    """
    if os.geteuid() != 0:
        raise LabError("the traffic lab needs root (network namespaces); run it as root")
    for tool in ("ip", "tc", "nft", "tcpdump", "ethtool"):
        if shutil.which(tool) is None:
            raise LabError(f"the traffic lab needs the '{tool}' command; install it")


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"'{' '.join(argv)}' failed: {msg[-1] if msg else proc.returncode}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Remove lab namespaces left by lab processes that no longer exist.

    Only names ``sf-lab-<pid>-...`` whose creating pid is dead are touched. Returns the
    removed names.
    """
    removed: list[str] = []
    listing = _run(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NS_PREFIX):
            continue
        parts = name[len(NS_PREFIX) :].split("-")
        if not parts or not parts[0].isdigit() or _pid_alive(int(parts[0])):
            continue
        _kill_ns_pids(name)
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


def _kill_ns_pids(ns: str) -> None:
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    for tok in out.split():
        if tok.isdigit() and int(tok) != os.getpid():
            try:
                os.kill(int(tok), signal.SIGKILL)
            except ProcessLookupError:
                pass


class LabTopology:
    """Three namespaces (client, router, server) with offload-free veths and no route out.

    Use as a context manager; :meth:`close` stops every process started through
    :meth:`popen` and deletes the namespaces.

    Raises:
        LabError: on entry, when not root or a setup command fails.
    """

    def __init__(self) -> None:
        tag = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.tag = tag
        self.client_ns = f"{tag}-c"
        self.router_ns = f"{tag}-r"
        self.server_ns = f"{tag}-s"
        self._procs: list[subprocess.Popen[bytes]] = []
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
        require_root()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
            self.run(ns, ["ip", "link", "set", "lo", "up"])
            for key in ("all", "default"):
                self.run(ns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"])
        c, r, s = self.namespaces
        _run(
            [
                "ip",
                "link",
                "add",
                CLIENT_IF,
                "netns",
                c,
                "type",
                "veth",
                "peer",
                "name",
                ROUTER_CLIENT_IF,
                "netns",
                r,
            ]
        )
        _run(
            [
                "ip",
                "link",
                "add",
                ROUTER_SERVER_IF,
                "netns",
                r,
                "type",
                "veth",
                "peer",
                "name",
                SERVER_IF,
                "netns",
                s,
            ]
        )
        links = (
            (c, CLIENT_IF, CLIENT_IP),
            (r, ROUTER_CLIENT_IF, ROUTER_CLIENT_IP),
            (r, ROUTER_SERVER_IF, ROUTER_SERVER_IP),
            (s, SERVER_IF, SERVER_IP),
        )
        for ns, dev, ip in links:
            self.run(ns, ["ip", "link", "set", dev, "mtu", str(MTU)])
            self.run(ns, ["ip", "addr", "add", f"{ip}/24", "dev", dev])
            self.run(ns, ["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"])
            self.run(ns, ["ip", "link", "set", dev, "up"])
        for ip in sorted(set(NAMES.values()) | {DNS_IP}):
            self.run(s, ["ip", "addr", "add", f"{ip}/24", "dev", SERVER_IF])
        self.run(c, ["ip", "route", "add", "default", "via", ROUTER_CLIENT_IP])
        self.run(s, ["ip", "route", "add", "default", "via", ROUTER_SERVER_IP])
        self.run(r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        _log.info("lab topology %s up", self.tag)

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._procs):
            self.stop(proc)
        for ns in reversed(self._created):
            try:
                _kill_ns_pids(ns)
                _run(["ip", "netns", "del", ns], check=False)
            except Exception:  # noqa: BLE001 - cleanup must go on
                _log.warning("could not delete namespace %s", ns, exc_info=True)
        self._created.clear()
        _log.info("lab topology %s removed", self.tag)

    # -- commands --------------------------------------------------------------------------
    def run(
        self, ns: str, argv: Sequence[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside namespace ``ns``.

        Raises:
            LabError: the command exited non-zero and ``check`` is true.
        """
        return _run(["ip", "netns", "exec", ns, *argv], check=check)

    def popen(
        self,
        ns: str,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside ``ns``; :meth:`close` stops it.

        Its stdout and stderr go to ``log`` (or nowhere).
        """
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self._procs.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 5.0
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


def _describe(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    if isinstance(args, (list, tuple)):
        words = [str(a) for a in args[4:]]  # skip "ip netns exec NS"
        mods = [w for w in words if w.startswith("training.")]
        return mods[0] if mods else (words[0] if words else "process")
    return str(args)


def wait_for_marker(
    proc: subprocess.Popen[bytes], log: Path, marker: str, timeout_s: float
) -> None:
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
