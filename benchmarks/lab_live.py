"""Reading `shortflow live` in the lab's router namespace from outside, for the benchmarks
(``live``, ``soak``): a fresh API port per start, the API through ``curl`` in the
namespace, Prometheus lines, ``/proc/PID/status``. The command line itself is
:func:`training.lab.live.start_live`'s.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from training.lab.topology import LabTopology

__all__ = [
    "fresh_port",
    "api",
    "metric",
    "status_kb",
    "cpu_seconds",
    "fd_count",
]

_ports = itertools.count(18081)


def fresh_port() -> int:
    """An API port for the next `shortflow live` (each start gets its own)."""
    return next(_ports)


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
