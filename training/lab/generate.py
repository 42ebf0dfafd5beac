"""Generate labeled captures: plan sessions, run them in the lab, write pcaps + manifest.

``generate(scenario, sessions, seed, out_dir)`` builds a :class:`Lab` (namespaces, servers,
network profile), runs each session's player while ``tcpdump`` records the router's
client-facing interface, and returns one manifest row per capture (also written to
``out_dir/manifest.csv``). ``mixed`` sessions also get ``<capture>.timeline.json``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from tqdm import tqdm

from training.lab.certs import make_certificates
from training.lab.conditions import (
    Profile,
    apply_profile,
    get_profile,
    install_delay_path,
)
from training.lab.scenarios import SCENARIOS, ScenarioError, SessionPlan, plan_session
from training.lab.topology import (
    NAMES,
    ROUTER_CLIENT_IF,
    LabError,
    LabTopology,
    child_env,
    repo_root,
    wait_for_marker,
)
from training.manifest import MANIFEST_COLUMNS, file_sha256

__all__ = [
    "MANIFEST_COLUMNS",
    "Lab",
    "SessionResult",
    "generate",
    "record_sessions",
    "session_seed",
    "sigterm_as_interrupt",
    "write_manifest",
]

_log = logging.getLogger(__name__)


def session_seed(seed: int, scenario: str, index: int) -> int:
    """The plan seed of session ``index`` of a run with ``seed`` (stable, 31-bit)."""
    digest = hashlib.sha256(f"{int(seed)}:{scenario}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class SessionResult:
    """What one recorded session produced."""

    def __init__(
        self,
        pcap: Path,
        plan: SessionPlan,
        player: dict[str, Any],
        kernel_drops: int,
        wall_s: float,
    ) -> None:
        self.pcap = pcap
        self.plan = plan
        self.player = player
        self.kernel_drops = kernel_drops
        self.wall_s = wall_s


class Lab:
    """A running lab: topology, servers, certificates and a network profile.

    Use as a context manager; sessions can then be recorded with :meth:`run_session`.
    Everything (processes, namespaces, the scratch directory) is removed on exit, also on
    exceptions and Ctrl-C.

    Raises:
        LabError: on entry, when the lab cannot be built (not root, tool missing, ...).
    """

    def __init__(self, profile: str = "wifi") -> None:
        self.profile: Profile = get_profile(profile)
        self.topo = LabTopology()
        self.work = Path(tempfile.gettempdir())  # replaced by a private folder on entry
        self._delay: Any = None
        self._entered = False

    def __enter__(self) -> Lab:
        self.work = Path(tempfile.mkdtemp(prefix="sflab-"))
        try:
            self.topo.open()
            certs = make_certificates(NAMES, self.work / "pki")
            self.ca = certs.ca
            install_delay_path(self.topo)
            self._delay = apply_profile(self.topo, self.profile, self.work)
            log = self.work / "servers.log"
            proc = self.topo.popen(
                self.topo.server_ns,
                [
                    sys.executable,
                    "-m",
                    "training.lab.servers",
                    "--cert",
                    str(certs.cert),
                    "--key",
                    str(certs.key),
                ],
                log=log,
                env=child_env(),
                cwd=repo_root(),
            )
            wait_for_marker(proc, log, "READY", 30.0)
            self._servers = proc
        except BaseException:
            self.close()
            raise
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove everything the lab made (idempotent)."""
        self.topo.close()
        if self.work.name.startswith("sflab-"):
            shutil.rmtree(self.work, ignore_errors=True)

    def set_profile(self, name: str) -> None:
        """Switch network conditions for the next sessions.

        Raises:
            LabError: unknown profile or a command failed.
        """
        profile = get_profile(name)
        if profile == self.profile:
            return
        if self._delay is not None:
            self.topo.stop(self._delay)
        self.profile = profile
        self._delay = apply_profile(self.topo, profile, self.work)

    def run_session(self, plan: SessionPlan, pcap: Path) -> SessionResult:
        """Record one session: start the capture, run the player, stop the capture.

        Raises:
            LabError: the capture or the player failed, or the player overran its time.
        """
        if not self._entered:
            raise LabError("Lab.run_session needs an entered Lab (use 'with Lab() as lab')")
        t0 = time.monotonic()
        pcap.parent.mkdir(parents=True, exist_ok=True)
        try:
            player_result, drops = self._record(plan, pcap)
        except BaseException:
            pcap.unlink(missing_ok=True)  # no half-made capture without a manifest row
            raise
        return SessionResult(pcap, plan, player_result, drops, time.monotonic() - t0)

    def _record(self, plan: SessionPlan, pcap: Path) -> tuple[dict[str, Any], int]:
        tag = pcap.stem
        cap_log = self.work / f"{tag}.tcpdump.log"
        cap = self.topo.popen(
            self.topo.router_ns,
            [
                "tcpdump",
                "-i",
                ROUTER_CLIENT_IF,
                "-w",
                str(pcap),
                "-s",
                "0",
                "-U",
                "-n",
                "-Z",
                "root",
                "--immediate-mode",
            ],
            log=cap_log,
        )
        wait_for_marker(cap, cap_log, "listening on", 15.0)
        plan_file = self.work / f"{tag}.plan.json"
        plan_file.write_text(plan.to_json())
        result_file = self.work / f"{tag}.result.json"
        player_log = self.work / f"{tag}.player.log"
        player = self.topo.popen(
            self.topo.client_ns,
            [
                sys.executable,
                "-m",
                "training.lab.players",
                "--plan",
                str(plan_file),
                "--ca",
                str(self.ca),
                "--result",
                str(result_file),
            ],
            log=player_log,
            env=child_env(),
            cwd=repo_root(),
        )
        try:
            player.wait(timeout=plan.duration_s + 60.0)
        except subprocess.TimeoutExpired:
            raise LabError(f"lab player for {tag} overran its {plan.duration_s:.0f} s") from None
        finally:
            rc = self.topo.stop(player)
            if rc is None or rc != 0:
                self.topo.stop(cap, sig=signal.SIGINT)
        time.sleep(0.3)  # let the last packets through the delay line
        self.topo.stop(cap, sig=signal.SIGINT)
        if rc != 0 or not result_file.exists():
            tail = player_log.read_text(errors="replace").strip().splitlines()
            raise LabError(
                f"lab player for {tag} failed (exit {rc}): {tail[-1] if tail else 'no output'}"
            )
        result: dict[str, Any] = json.loads(result_file.read_text())
        stats = result.get("stats", {})
        if plan.protocol != "udp" and not stats.get("completed"):
            raise LabError(
                f"lab session {tag} completed no transfer ({stats.get('failed', 0)} "
                "failed); the lab network or servers are broken"
            )
        if plan.protocol == "udp" and not stats.get("received"):
            raise LabError(f"lab session {tag} received no call packets")
        match = re.search(r"(\d+) packets? dropped by kernel", cap_log.read_text())
        drops = int(match.group(1)) if match else 0
        if drops:
            _log.warning("%s: tcpdump reports %d packets dropped by the kernel", tag, drops)
        return result, drops


def _notes(res: SessionResult, seed: int, index: int, profile: Profile) -> str:
    st = res.player.get("stats", {})
    parts = [
        f"scenario={res.plan.scenario}",
        f"seed={seed}",
        f"session={index}",
        f"session_seed={res.plan.seed}",
        f"profile={profile.name}",
        f"duration={res.plan.duration_s:g}s",
        f"plan: {res.plan.summary()}",
    ]
    keys = (
        "requests",
        "completed",
        "cancelled",
        "failed",
        "connections",
        "bytes",
        "dns_queries",
        "swipes",
        "abandoned",
        "segments",
        "stalls",
        "sent",
        "received",
    )
    observed = " ".join(f"{k}={st[k]}" for k in keys if k in st)
    parts.append(f"observed: {observed}")
    if res.kernel_drops:
        parts.append(f"capture_drops={res.kernel_drops}")
    return "; ".join(parts).replace(",", " ")


def _timeline(res: SessionResult) -> dict[str, Any]:
    start = float(res.player["start"])
    return {
        "capture": res.pcap.name,
        "scenario": res.plan.scenario,
        "seed": res.plan.seed,
        "clock": "unix seconds, same clock as the pcap timestamps",
        "start": start,
        "end": float(res.player["end"]),
        "intervals": [
            {**iv, "start_s": round(iv["start"] - start, 3), "end_s": round(iv["end"] - start, 3)}
            for iv in res.player["intervals"]
        ],
    }


def write_manifest(out_dir: Path, rows: Sequence[dict[str, str]]) -> Path:
    """Merge ``rows`` into ``out_dir/manifest.csv`` (same path -> replaced) and return it.

    Raises:
        LabError: an existing manifest has other columns.
    """
    path = out_dir / "manifest.csv"
    existing: dict[str, dict[str, str]] = {}
    if path.exists():
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                raise LabError(
                    f"{path} has columns {reader.fieldnames}; expected {','.join(MANIFEST_COLUMNS)}"
                )
            existing = {r["path"]: r for r in reader}
    for row in rows:
        existing[row["path"]] = row
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for key in sorted(existing):
            writer.writerow({c: existing[key].get(c, "") for c in MANIFEST_COLUMNS})
    tmp.replace(path)
    return path


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the lab cleans up when killed politely."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_sig: int, _frm: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def record_sessions(
    lab: Lab,
    scenario: str,
    indices: Sequence[int],
    seed: int,
    out_dir: Path,
    duration_s: float | None = None,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Record sessions ``indices`` of ``(scenario, seed)`` in a running lab.

    Returns manifest rows (not yet written). Raises like :meth:`Lab.run_session`.
    """
    rows: list[dict[str, str]] = []
    profile = lab.profile
    for i in tqdm(indices, desc=f"lab {scenario}", unit="session", disable=not progress):
        plan = plan_session(scenario, session_seed(seed, scenario, i), duration_s)
        pcap = out_dir / f"{scenario}-{profile.name}-seed{seed}-{i:03d}.pcap"
        res = lab.run_session(plan, pcap)
        _log.info("%s: %.1f s wall, %s", pcap.name, res.wall_s, res.player.get("stats"))
        if scenario == "mixed":
            timeline = pcap.with_suffix(".timeline.json")
            timeline.write_text(json.dumps(_timeline(res), indent=1))
        rows.append(
            {
                "path": str(pcap.relative_to(out_dir)),
                "sha256": file_sha256(pcap),
                "label": plan.label,
                "app": plan.app,
                "recorded": "lab",
                "device": "lab-emulator",
                "date": dt.datetime.fromtimestamp(float(res.player["start"]), dt.UTC)
                .date()
                .isoformat(),
                "license": "generated",
                "notes": _notes(res, seed, i, profile),
            }
        )
    return rows


def generate(
    scenario: str,
    sessions: int,
    seed: int,
    out_dir: Path,
    profile: str = "wifi",
    duration_s: float | None = None,
    *,
    lab: Lab | None = None,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Record ``sessions`` sessions of ``scenario`` into ``out_dir``; return manifest rows.

    Session ``i`` uses the plan ``plan_session(scenario, session_seed(seed, scenario, i),
    duration_s)``. Rows are merged into ``out_dir/manifest.csv``. Pass a running ``lab`` to
    share one topology between calls (its profile is switched to ``profile``).

    Raises:
        ScenarioError: unknown scenario or bad duration.
        LabError: bad profile or session count, not root, or a session failed.
    """
    if scenario not in SCENARIOS:
        raise ScenarioError(
            f"unknown lab scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}"
        )
    get_profile(profile)
    if sessions < 1:
        raise LabError(f"need at least one session, got {sessions}")
    plan_session(scenario, session_seed(seed, scenario, 0), duration_s)  # validate early
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt():
        if lab is not None:
            lab.set_profile(profile)
            rows = record_sessions(
                lab, scenario, range(sessions), seed, out_dir, duration_s, progress
            )
        else:
            with Lab(profile) as own:
                rows = record_sessions(
                    own, scenario, range(sessions), seed, out_dir, duration_s, progress
                )
    write_manifest(out_dir, rows)
    return rows
