"""Record a labelled capture with tcpdump and append it to a manifest.

``record(iface, label, app, duration, manifest, out_dir, client=...)`` runs tcpdump on the
interface (with the BPF filter ``host CLIENT`` when a client address is given, so only that
device's traffic is kept), stops it after ``duration`` seconds, then hashes the file and
appends its manifest row. The label is what the person recording was doing (e.g. scrolling
Reels for the whole time): see ``datasets/README.md`` for how to record honest sessions.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from classifier.errors import CaptureError, DatasetError
from training.manifest import SESSION_LABELS, ManifestRow, add_row

__all__ = ["record", "MAX_DURATION"]

log = logging.getLogger(__name__)

MAX_DURATION = 24 * 3600.0
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_CAPTURED = re.compile(r"(\d+) packets? captured")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class _StderrReader(threading.Thread):
    """Collects tcpdump's stderr lines and signals when it has started listening."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[str] = []
        self.listening = threading.Event()

    def run(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "listening on" in line:
                self.listening.set()

    def last_error(self) -> str:
        useful = [x for x in self.lines if x and "listening on" not in x]
        return useful[-1] if useful else "no message"


def _check_args(iface: str, label: str, duration: float, client: str | None) -> None:
    if label not in SESSION_LABELS:
        raise DatasetError(f"unknown label {label!r} (expected one of {', '.join(SESSION_LABELS)})")
    if not 0 < duration <= MAX_DURATION:
        raise DatasetError(f"duration must be between 0 and {MAX_DURATION:g} s, got {duration}")
    if not iface or "/" in iface or iface.startswith("-"):
        raise CaptureError(iface or "''", "not a valid interface name")
    if client is not None:
        try:
            ipaddress.ip_address(client)
        except ValueError as exc:
            raise DatasetError(f"--client {client!r} is not an IP address") from exc


def _ns_prefix(netns: str | None) -> list[str]:
    return [] if netns is None else ["ip", "netns", "exec", netns]


def _check_iface(iface: str, netns: str | None) -> None:
    if shutil.which("ip") is None:
        if netns is not None or not Path("/sys/class/net", iface).exists():
            raise CaptureError(iface, "no such network interface (iproute2 not found)")
        return
    if netns is not None:
        names = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split()
        if netns not in names:
            raise CaptureError(iface, f"network namespace {netns!r} does not exist")
    cmd = ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", iface]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    if res.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        raise CaptureError(iface, f"no such network interface{where}")


def _out_path(out_dir: Path, label: str, app: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{_SAFE.sub('-', label)}_{_SAFE.sub('-', app) or 'app'}_{stamp}"
    out = out_dir / f"{base}.pcap"
    n = 1
    while out.exists():
        n += 1
        out = out_dir / f"{base}-{n}.pcap"
    return out


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(_STOP_TIMEOUT)


def _run_tcpdump(cmd: list[str], iface: str, duration: float) -> int:
    """Run tcpdump for ``duration`` seconds after it starts listening; return packets seen."""
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reader = _StderrReader(proc)
    reader.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not reader.listening.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                reader.join(2)
                raise CaptureError(iface, f"tcpdump did not start: {reader.last_error()}")
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            if proc.poll() is not None:
                reader.join(2)
                raise CaptureError(iface, f"tcpdump stopped early: {reader.last_error()}")
            time.sleep(min(left, 0.1))
    finally:
        _stop(proc)
        reader.join(5)
    match = next((m for m in map(_CAPTURED.search, reader.lines) if m), None)
    return int(match.group(1)) if match else -1


def record(
    iface: str,
    label: str,
    app: str,
    duration: float,
    manifest: Path,
    out_dir: Path,
    *,
    client: str | None = None,
    device: str = "",
    license: str = "",
    notes: str = "",
    netns: str | None = None,
) -> ManifestRow:
    """Capture ``duration`` seconds on ``iface`` into ``out_dir`` and add it to ``manifest``.

    ``client`` restricts the capture to one device's traffic (BPF ``host CLIENT``);
    ``netns`` runs tcpdump inside that network namespace. Returns the new manifest row.

    Raises :class:`CaptureError` when tcpdump is missing, the interface (or namespace) does
    not exist, tcpdump fails or records no packet; :class:`DatasetError` for a bad label,
    duration or client address, or when the manifest cannot be written.
    """
    _check_args(iface, label, duration, client)
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise CaptureError("tcpdump", "not installed (Debian: apt-get install tcpdump)")
    _check_iface(iface, netns)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"{out_dir}: cannot create folder: {exc.strerror or exc}") from exc
    out = _out_path(out_dir, label, app)
    cmd = [
        *_ns_prefix(netns),
        tcpdump,
        "-i",
        iface,
        "-w",
        str(out),
        "-n",
        "-s",
        "0",
        "-U",
        "--immediate-mode",
    ]
    if os.geteuid() == 0:
        cmd += ["-Z", "root"]  # keep root so tcpdump can write into any folder
    if client is not None:
        cmd += ["host", client]
    started = datetime.now(UTC)
    captured = _run_tcpdump(cmd, iface, duration)
    if not out.is_file() or captured == 0:
        out.unlink(missing_ok=True)
        raise CaptureError(iface, f"recorded no packets in {duration:g} s; nothing added")
    how = f"tcpdump -i {iface}" + (f" (netns {netns})" if netns else "")
    how += (f", filter 'host {client}'" if client else "") + f", {duration:g} s"
    row = add_row(
        manifest,
        out,
        label,
        app,
        recorded=how,
        device=device,
        date=started.date().isoformat(),
        license=license,
        notes=notes,
    )
    log.info("recorded %s packets into %s", captured if captured >= 0 else "?", out)
    return row
