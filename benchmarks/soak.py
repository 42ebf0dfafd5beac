"""A long run of `shortflow live` under mixed traffic, then restarts under that load (root).

The lab (``training.lab.generate.Lab``: client, router and server namespaces in
10.77.0.0/16 with no route out, the lab's TLS/QUIC/DNS servers, a network profile) carries,
from the client namespace through the router where `shortflow live --enforce nft` runs
(``training.lab.live``: AF_PACKET, its DNS forwarder, the API on loopback):

* video: ``--video-clients`` lab players at once, each playing Shorts and long-form
  sessions in turn (``--video-s`` each; the first starts with Shorts, the second with
  long-form);
* web: lab web-browsing sessions back to back (``--web-s`` each), short TLS flows;
* DNS: ``--dns-rate`` queries/s (lab names and names that do not exist) to shortflow's
  DNS forwarder, each from a fresh source port;
* a SYN burst every ``--flood-every`` s (first at ``--flood-first``): ``--flood-count``
  SYNs, each from its own source port, at ``--flood-rate`` per second, to a closed port of
  the lab server (which answers RST).

Every minute one line: VmRSS, VmHWM, open fds and CPU of the live process, packets
through the router's client-side interface (offered; both ways) and what shortflow saw and
lost (its ``/metrics``), first-verdict times of the flows first judged in that minute
(``/v1/live/flows``: seconds from a flow's first packet to its first verdict; the first
check point is at 1 s), flows with a verdict, flows the API keeps (active, and ended in the
last 10 minutes), blocks, DNS answers. At the end: RSS and fd
growth from the end of the warm-up (``--warmup`` minutes) to the last minute against the
targets (RSS <= +5 %, fds not above the warm-up count).

Then, with the traffic still running, restarts (``--no-restarts`` skips them):

1. SIGHUP after the policy file changed: same process, new policy in force (API), every
   set element that was there still there, the table unchanged otherwise;
2. SIGTERM: exit status, ``table inet shortflow`` gone, every other table of the router
   namespace exactly as before the run, and the audit log complete: each block the API
   reported (polled every minute and before each signal) has its ``block`` line, the
   ``block`` lines number the blocks the exit summary says were made, and each block in
   force at the signal has its ``unblock`` (``shutdown``) line;
3. start again on the same audit log, SIGKILL: every reported block has its line, the
   audit file keeps its bytes; the stale table's elements still carry timeouts (fail
   open); start again: it starts, its table holds none of the stale elements, the audit
   file still begins with every byte written before; SIGTERM as in 2.

All traffic stays in the lab's namespaces; every loop is bounded in count and time; the
namespaces go at the end, also on Ctrl-C, SIGTERM and errors.

    python -m benchmarks.soak --minutes 30
    python -m benchmarks.soak --minutes 2 --warmup 1 --flood-first 45   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lab_live import api, cpu_seconds, fd_count, fresh_port, metric, status_kb
from training.lab.generate import Lab, sigterm_as_interrupt
from training.lab.live import LiveRun, start_live
from training.lab.scenarios import plan_session
from training.lab.topology import (
    CLIENT_IP,
    NAMES,
    ROUTER_CLIENT_IF,
    ROUTER_CLIENT_IP,
    SERVER_IP,
    LabTopology,
    child_env,
    repo_root,
)

RSS_TARGET_PCT = 5.0
#: A table of someone else's in the router namespace: it must come through every restart
#: exactly as it was.
FOREIGN = """table ip keepme {
  set banned {
    type ipv4_addr
    elements = { 10.77.9.9, 10.77.9.10 }
  }
  chain forward_c {
    type filter hook forward priority 10; policy accept;
    ip saddr @banned drop
  }
}
"""
#: Manual blocks set over the API before the restarts (addresses no lab server uses).
MANUAL = (
    {"client": CLIENT_IP, "server": "10.77.20.99", "port": 443, "proto": "tcp"},
    {"client": CLIENT_IP, "server": "10.77.20.98", "port": None, "proto": None},
)


# -- the summary (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One minute of the run."""

    minute: int
    rss_kb: int
    hwm_kb: int
    fds: int
    cpu_pct: float
    offered: int
    seen: int
    lost: int
    firsts: tuple[float, ...]
    flows: int
    kept: int
    blocks: int
    dns_ok: int
    dns_sent: int


@dataclass(frozen=True)
class Growth:
    """RSS and fd change from the end of the warm-up to the last minute."""

    warm_minute: int
    rss_warm_kb: int
    rss_end_kb: int
    rss_max_kb: int
    rss_pct: float
    fds_warm: int
    fds_end: int
    fds_max: int
    slope_kb_per_min: float

    @property
    def rss_ok(self) -> bool:
        return self.rss_pct <= RSS_TARGET_PCT

    @property
    def fds_ok(self) -> bool:
        return self.fds_end <= self.fds_warm


def growth(samples: Sequence[Sample], warmup: int) -> Growth | None:
    """Growth from the sample of minute ``warmup`` (or the first after it) to the last;
    None when no sample is at or after the warm-up, or none after it."""
    after = [s for s in samples if s.minute >= warmup]
    if len(after) < 2:
        return None
    warm, end = after[0], after[-1]
    xs = [float(s.minute) for s in after]
    ys = [float(s.rss_kb) for s in after]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return Growth(
        warm_minute=warm.minute,
        rss_warm_kb=warm.rss_kb,
        rss_end_kb=end.rss_kb,
        rss_max_kb=max(s.rss_kb for s in after),
        rss_pct=100.0 * (end.rss_kb - warm.rss_kb) / max(warm.rss_kb, 1),
        fds_warm=warm.fds,
        fds_end=end.fds,
        fds_max=max(s.fds for s in after),
        slope_kb_per_min=slope,
    )


def _dist(values: Sequence[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return f"{statistics.median(v):.2f}/{p95:.2f}/{v[-1]:.2f}"


# -- child processes (run inside the client namespace) ---------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_burst(src: str, dst: str, port: int, count: int, rate: float, seed: int) -> int:
    """Send ``count`` (at most 64,000) TCP SYNs from ``src`` to ``dst``:``port``, each
    from its own source port, at ``rate`` per second (raw socket; root). Returns the
    number sent."""
    count = min(count, 64_000)
    rng = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    sent, start, batch = 0, time.monotonic(), 50
    deadline = start + count / rate + 30.0
    while sent < count and time.monotonic() < deadline:
        for _ in range(min(batch, count - sent)):
            sport = 1024 + (sent * 7919) % 64_000
            head = struct.pack(
                "!HHIIBBHHH", sport, port, rng.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0
            )
            csum = _checksum(pseudo + head)
            head = head[:16] + struct.pack("!H", csum) + head[18:]
            s.sendto(head, (dst, 0))
            sent += 1
        pause = start + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    s.close()
    return sent


def dns_loop(server: str, rate: float, seconds: float, status: Path, seed: int) -> None:
    """Ask ``server`` ``rate`` questions a second (a fresh socket, so source port, each;
    1 s timeout) for at most ``seconds`` or until SIGTERM; writes the counts to
    ``status`` (JSON) every 5 s and at the end."""
    import dnslib

    stop = False

    def _term(_sig: int, _frm: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    rng = random.Random(seed)
    names = sorted(NAMES)
    counts = {"sent": 0, "answered": 0, "nxdomain": 0, "timeouts": 0}
    start = time.monotonic()
    next_write = start
    while not stop and time.monotonic() - start < seconds:
        name = rng.choice(names) if rng.random() < 0.8 else f"nx{rng.randrange(10**6)}.lab.test"
        q = dnslib.DNSRecord.question(name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            try:
                s.sendto(q.pack(), (server, 53))
                counts["sent"] += 1
                answer = dnslib.DNSRecord.parse(s.recv(4096))
                counts["answered"] += 1
                if answer.header.rcode == dnslib.RCODE.NXDOMAIN:
                    counts["nxdomain"] += 1
            except OSError:
                counts["timeouts"] += 1
            except Exception:  # noqa: BLE001 - a damaged answer counts as none
                counts["timeouts"] += 1
        now = time.monotonic()
        if now >= next_write:
            status.write_text(json.dumps(counts))
            next_write = now + 5.0
        pause = start + counts["sent"] / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    status.write_text(json.dumps(counts))


# -- traffic ----------------------------------------------------------------------------


@dataclass
class _Loop:
    """Lab player sessions one after another, cycling through ``scenarios``."""

    name: str
    scenarios: tuple[str, ...]
    seconds: float
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    index: int = 0
    ok: int = 0
    failed: int = 0


@dataclass
class Traffic:
    """The mixed load; :meth:`tick` (call about every second) keeps it going."""

    lab: Lab
    tmp: Path
    args: argparse.Namespace
    loops: list[_Loop] = field(default_factory=list)
    dns: subprocess.Popen[bytes] | None = None
    flood: subprocess.Popen[bytes] | None = None
    floods: int = 0
    flood_at: float = 0.0
    #: what happened since the last minute's line (SYN bursts started)
    events: list[str] = field(default_factory=list)
    t0: float = 0.0

    def start(self, limit_s: float) -> None:
        a = self.args
        self.t0 = time.monotonic()
        self.flood_at = self.t0 + a.flood_first
        self.loops = [
            _Loop(f"video{i + 1}", ("shorts", "longform")[:: 1 if i % 2 == 0 else -1], a.video_s)
            for i in range(a.video_clients)
        ] + [_Loop("web", ("web",), a.web_s)]
        (self.tmp / "players").mkdir(exist_ok=True)
        self.dns = self._child(
            "dns",
            [
                "dns",
                "--rate",
                str(a.dns_rate),
                "--seconds",
                f"{limit_s:.0f}",
                "--status",
                str(self.tmp / "dns.json"),
            ],
        )
        self.tick()

    def _child(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        topo = self.lab.topo
        return topo.popen(
            topo.client_ns,
            [sys.executable, "-m", "benchmarks.soak", "--child", *argv],
            log=self.tmp / f"{name}.log",
            env=child_env(),
            cwd=repo_root(),
        )

    def _play(self, loop: _Loop) -> None:
        scenario = loop.scenarios[loop.index % len(loop.scenarios)]
        seed = 1000 * (1 + loop.index) + sum(loop.name.encode()) % 1000
        plan = plan_session(scenario, seed, duration_s=loop.seconds)
        base = self.tmp / "players" / f"{loop.name}-{loop.index}"
        base.with_suffix(".plan.json").write_text(plan.to_json())
        topo = self.lab.topo
        loop.proc = topo.popen(
            topo.client_ns,
            [
                sys.executable,
                "-m",
                "training.lab.players",
                "--plan",
                str(base.with_suffix(".plan.json")),
                "--ca",
                str(self.lab.ca),
                "--result",
                str(base.with_suffix(".result.json")),
                "--dns",
                ROUTER_CLIENT_IP,
            ],
            log=self.tmp / f"{loop.name}.log",
            env=child_env(),
            cwd=repo_root(),
        )
        loop.started = time.monotonic()
        loop.index += 1

    def tick(self) -> None:
        now = time.monotonic()
        topo = self.lab.topo
        for loop in self.loops:
            if loop.proc is not None:
                if loop.proc.poll() is None and now - loop.started < loop.seconds + 60:
                    continue
                rc = topo.stop(loop.proc)  # also one that overran its time
                if rc == 0:
                    loop.ok += 1
                else:
                    loop.failed += 1
                loop.proc = None
            self._play(loop)
        if self.flood is not None and self.flood.poll() is not None:
            topo.stop(self.flood)
            self.flood = None
        if self.flood is None and now >= self.flood_at:
            a = self.args
            self.flood = self._child(
                "syn",
                [
                    "syn",
                    "--count",
                    str(a.flood_count),
                    "--rate",
                    str(a.flood_rate),
                    "--seed",
                    str(self.floods),
                ],
            )
            self.floods += 1
            self.events.append(f"SYN burst {self.floods}")
            self.flood_at = now + a.flood_every

    def dns_counts(self) -> dict[str, int]:
        try:
            return dict(json.loads((self.tmp / "dns.json").read_text()))
        except (OSError, ValueError):
            return {}

    def sessions(self) -> str:
        return ", ".join(f"{lp.name} {lp.ok} ok / {lp.failed} cut" for lp in self.loops)

    def stop(self) -> None:
        topo = self.lab.topo
        for proc in [lp.proc for lp in self.loops] + [self.flood, self.dns]:
            if proc is not None:
                topo.stop(proc)


# -- reading the router namespace -------------------------------------------------------


def _if_packets(topo: LabTopology) -> int:
    """Packets through the router's client-facing interface, both ways (what the capture
    there is offered)."""
    base = f"/sys/class/net/{ROUTER_CLIENT_IF}/statistics"
    out = topo.run(topo.router_ns, ["cat", f"{base}/rx_packets", f"{base}/tx_packets"]).stdout
    return sum(int(x) for x in out.split())


def other_tables(topo: LabTopology) -> dict[str, str]:
    """Every nftables table of the router namespace but ``inet shortflow``, listed."""
    out: dict[str, str] = {}
    for line in topo.run(topo.router_ns, ["nft", "list", "tables"]).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and parts[1:] != ["inet", "shortflow"]:
            listing = topo.run(topo.router_ns, ["nft", "list", "table", *parts[1:]]).stdout
            out[" ".join(parts[1:])] = listing
    return out


def elements(topo: LabTopology) -> dict[str, float] | None:
    """The elements of shortflow's sets (``set key`` -> seconds until it expires), or None
    when the table does not exist."""
    listing = topo.run(
        topo.router_ns, ["nft", "-j", "list", "table", "inet", "shortflow"], check=False
    )
    if listing.returncode != 0:
        return None
    out: dict[str, float] = {}
    for item in json.loads(listing.stdout)["nftables"]:
        found = item.get("set")
        if not found or not found.get("elem"):
            continue
        for elem in found["elem"]:
            inner = elem.get("elem") if isinstance(elem, dict) else None
            if isinstance(inner, dict):
                key, expires = inner.get("val"), float(inner.get("expires", 0))
            else:
                key, expires = elem, 0.0
            out[f"{found['name']} {json.dumps(key, sort_keys=True)}"] = expires
    return out


def audit_tail(path: Path, offset: int) -> list[dict[str, Any]]:
    """The audit lines from byte ``offset`` on (a torn last line is left out)."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    out = []
    for line in data.split(b"\n"):
        with contextlib.suppress(ValueError):
            if line.strip():
                out.append(json.loads(line))
    return out


def _sha(path: Path, size: int) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(size)).hexdigest()


# -- the live process under watch ---------------------------------------------------------


@dataclass
class Watched:
    """One start of `shortflow live`: the blocks its API reported, where its audit lines
    begin."""

    run: LiveRun
    offset: int
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.run.proc.pid

    def api(
        self, topo: LabTopology, path: str, method: str = "GET", body: str | None = None
    ) -> str:
        return api(topo, self.run.port, path, method, body)

    def poll_blocks(self, topo: LabTopology) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = json.loads(self.api(topo, "/v1/live/blocks"))["blocks"]
        for b in blocks:
            self.reported.setdefault(b["id"], b)
        return blocks


class Soak:
    def __init__(self, lab: Lab, tmp: Path, args: argparse.Namespace) -> None:
        self.lab, self.topo, self.tmp, self.args = lab, lab.topo, tmp, args
        self.audit = tmp / "audit.jsonl"
        self.starts = 0
        self.results: list[tuple[str, bool, str]] = []
        self.traffic = Traffic(lab, tmp, args)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.results.append((what, ok, detail))
        print(
            f"  [{'ok' if ok else 'FAIL'}] {what}" + (f": {detail}" if detail else ""), flush=True
        )
        return ok

    def start(self) -> Watched:
        offset = self.audit.stat().st_size if self.audit.exists() else 0
        run = start_live(
            self.topo,
            self.tmp,
            "nft",
            capture="afpacket",
            engine="fast",
            api_port=fresh_port(),
            audit=self.audit,
            name=f"soak-{self.starts}",
        )
        self.starts += 1
        return Watched(run, offset)

    # -- the long run

    def sample(self, w: Watched, minute: int, prev: dict[str, float]) -> Sample:
        """Read the process and its API (the /proc figures first, before any API call)."""
        now_wall, now = time.time(), time.monotonic()
        rss, hwm, fds = (
            status_kb(w.pid, "VmRSS"),
            status_kb(w.pid, "VmHWM"),
            fd_count(w.pid),
        )
        cpu = cpu_seconds(w.pid)
        rx = _if_packets(self.topo)
        text = w.api(self.topo, "/metrics")
        seen = int(metric(text, "shortflow_live_packets_total"))
        lost = int(metric(text, "shortflow_live_drops_total"))
        flows = json.loads(w.api(self.topo, "/v1/live/flows"))["flows"]
        since = prev.get("wall", now_wall - 60.0)
        firsts = tuple(
            float(f["first_verdict"]["at"])
            for f in flows
            if since < f["first_verdict"]["flow_start"] + f["first_verdict"]["at"] <= now_wall
        )
        blocks = w.poll_blocks(self.topo)
        dns = self.traffic.dns_counts()
        s = Sample(
            minute=minute,
            rss_kb=rss,
            hwm_kb=hwm,
            fds=fds,
            cpu_pct=100.0 * (cpu - prev.get("cpu", cpu)) / max(now - prev.get("mono", now), 1e-9),
            offered=rx - int(prev.get("rx", rx)),
            seen=seen - int(prev.get("seen", 0)),
            lost=lost - int(prev.get("lost", 0)),
            firsts=firsts,
            flows=int(metric(text, "shortflow_live_active_flows")),
            kept=len(flows),
            blocks=len(blocks),
            dns_ok=dns.get("answered", 0) - int(prev.get("dns_ok", 0)),
            dns_sent=dns.get("sent", 0) - int(prev.get("dns_sent", 0)),
        )
        prev.update(
            wall=now_wall,
            mono=now,
            cpu=cpu,
            rx=rx,
            seen=seen,
            lost=lost,
            dns_ok=dns.get("answered", 0),
            dns_sent=dns.get("sent", 0),
        )
        return s

    def soak(self, w: Watched) -> list[Sample]:
        minutes = self.args.minutes
        print(
            f"== soak: {minutes} min; per minute: RSS / HWM MiB, open fds, CPU % of one core, "
            "packets offered (router client-side interface, both ways) / seen by shortflow / "
            "lost, first verdict s after flow start (median/p95/max, flows first judged that "
            "minute), flows with a verdict, flows the API keeps (active and ended in the last "
            "10 min), blocks in force, DNS answered/asked",
            flush=True,
        )
        print(
            " min  RSS MiB  HWM MiB  fds  CPU %   offered      seen  lost  first verdict s"
            "        n   flows   kept blocks   DNS ok/asked",
            flush=True,
        )
        prev: dict[str, float] = {}
        self.sample(w, 0, prev)  # the baselines of the counters
        samples: list[Sample] = []
        start = self.traffic.t0
        for minute in range(1, minutes + 1):
            while time.monotonic() < start + 60.0 * minute:
                self.traffic.tick()
                if w.run.proc.poll() is not None:
                    self.check(
                        "live process runs through the soak",
                        False,
                        f"exit {w.run.proc.returncode} in minute {minute}",
                    )
                    return samples
                time.sleep(min(1.0, max(0.0, start + 60.0 * minute - time.monotonic())))
            s = self.sample(w, minute, prev)
            samples.append(s)
            print(
                f"{s.minute:4d} {s.rss_kb / 1024:8.1f} {s.hwm_kb / 1024:8.1f} {s.fds:4d} "
                f"{s.cpu_pct:6.1f} {s.offered:9,d} {s.seen:9,d} {s.lost:5d}  "
                f"{_dist(s.firsts):>16s} {len(s.firsts):6d} {s.flows:7d} {s.kept:6d} {s.blocks:6d} "
                f"{s.dns_ok:6d}/{s.dns_sent:<6d} {', '.join(self.traffic.events)}".rstrip(),
                flush=True,
            )
            self.traffic.events.clear()
        return samples

    def summary(self, samples: Sequence[Sample]) -> None:
        a = self.args
        print(f"== summary after {len(samples)} min", flush=True)
        seen = sum(s.seen for s in samples)
        lost = sum(s.lost for s in samples)
        offered = sum(s.offered for s in samples)
        firsts = [x for s in samples for x in s.firsts]
        print(
            f"  packets offered {offered:,}, seen {seen:,}, lost {lost:,} "
            f"({100.0 * lost / max(seen + lost, 1):.3f} %); "
            f"mean {seen / max(60 * len(samples), 1):,.0f}/s"
        )
        print(
            "  first verdict (s after flow start), all flows: median/p95/max "
            f"{_dist(firsts)} over {len(firsts)} flows"
        )
        print(
            f"  traffic: {self.traffic.sessions()}; SYN bursts {self.traffic.floods}; "
            f"DNS {self.traffic.dns_counts()}"
        )
        g = growth(samples, a.warmup)
        if g is None:
            self.check("RSS and fds measured after the warm-up", False, "too few minutes")
            return
        self.check(
            f"RSS growth minute {g.warm_minute} -> {samples[-1].minute} <= {RSS_TARGET_PCT:.0f} %",
            g.rss_ok,
            f"{g.rss_warm_kb / 1024:.1f} -> {g.rss_end_kb / 1024:.1f} MiB = {g.rss_pct:+.2f} % "
            f"(max {g.rss_max_kb / 1024:.1f} MiB; fit {g.slope_kb_per_min / 1024:+.2f} MiB/min; "
            f"HWM {samples[-1].hwm_kb / 1024:.1f} MiB)",
        )
        self.check(
            f"no fd growth minute {g.warm_minute} -> {samples[-1].minute}",
            g.fds_ok,
            f"{g.fds_warm} -> {g.fds_end} (max {g.fds_max})",
        )

    # -- restarts

    def audit_complete(
        self, w: Watched, what: str, made: int | None, shutdown: Sequence[dict[str, Any]]
    ) -> None:
        lines = audit_tail(self.audit, w.offset)
        blocks = [e for e in lines if e.get("action") == "block"]
        by_id = {
            (e.get("block_id"), e.get("client"), e.get("server"), e.get("port")) for e in blocks
        }
        missing = [
            b["id"]
            for b in w.reported.values()
            if (b["id"], b["client"], b["server"], b["port"]) not in by_id
        ]
        self.check(
            f"{what}: every block the API reported has its audit line",
            not missing,
            f"{len(w.reported)} reported, {len(blocks)} block lines"
            + (f"; missing {missing[:10]}" if missing else ""),
        )
        if made is not None:
            new = sum(1 for e in blocks if not e.get("renewed"))
            self.check(
                f"{what}: block lines = blocks made (exit summary)",
                new == made,
                f"{new} lines, {made} made",
            )
        if shutdown:
            ended = {
                e.get("block_id")
                for e in lines
                if e.get("action") == "unblock" and e.get("rule") == "shutdown"
            }
            left = [b["id"] for b in shutdown if b["id"] not in ended]
            self.check(
                f"{what}: an unblock (shutdown) line for each block in force",
                not left,
                f"{len(shutdown)} in force" + (f"; no line for {left[:10]}" if left else ""),
            )

    def _made(self, w: Watched) -> int | None:
        found = re.findall(
            r"exit summary: .*made (\d+) \(mode", w.run.log.read_text(errors="replace")
        )
        return int(found[-1]) if found else None

    def _manual_blocks(self, w: Watched, seconds: int) -> None:
        for m in MANUAL:
            body = {**m, "duration_s": seconds, "reason": "soak"}
            rec = json.loads(w.api(self.topo, "/v1/live/blocks", "POST", json.dumps(body)))
            w.reported.setdefault(rec["id"], rec)

    def _sigterm(self, w: Watched, tables: dict[str, str], what: str) -> None:
        in_force = [b for b in w.poll_blocks(self.topo) if not b.get("dry_run")]
        rc = self.topo.stop(w.run.proc, sig=signal.SIGTERM, wait_s=30.0)
        self.check(f"{what}: exits 0 on SIGTERM", rc == 0, f"exit {rc}")
        self.check(f"{what}: table inet shortflow gone", elements(self.topo) is None)
        self.check(
            f"{what}: other tables unchanged",
            other_tables(self.topo) == tables,
            ", ".join(sorted(tables)),
        )
        self.audit_complete(w, what, self._made(w), in_force)

    def restarts(self, w: Watched, tables: dict[str, str]) -> None:
        topo = self.topo
        print("== restarts under load", flush=True)
        self._manual_blocks(w, 600)
        time.sleep(1.0)
        before = elements(topo) or {}
        # 1. SIGHUP with a changed policy
        w.run.policy.write_text(
            w.run.policy.read_text().replace("block_seconds = 60", "block_seconds = 90")
        )
        w.run.proc.send_signal(signal.SIGHUP)
        time.sleep(3.0)
        self.check("SIGHUP: same process still runs", w.run.proc.poll() is None)
        policy = json.loads(w.api(topo, "/v1/policy"))
        self.check(
            "SIGHUP: new policy in force",
            policy.get("block_seconds") == 90,
            f"block_seconds {policy.get('block_seconds')}",
        )
        after = elements(topo)
        kept = [k for k, exp in before.items() if exp > 10]
        gone = [k for k in kept if after is None or k not in after]
        self.check(
            "SIGHUP: rules stay",
            after is not None and not gone,
            f"{len(kept)} elements before, {len(gone)} gone",
        )
        self.check("SIGHUP: other tables unchanged", other_tables(topo) == tables)
        # 2. SIGTERM
        self._sigterm(w, tables, "SIGTERM")
        # 3. start again, SIGKILL, start again
        w2 = self.start()
        self.check("restart after SIGTERM: starts, API answers", w2.run.proc.poll() is None)
        self._manual_blocks(w2, 600)
        self._settle(30.0)
        w2.poll_blocks(topo)
        before_kill = elements(topo) or {}
        size = self.audit.stat().st_size
        sha = _sha(self.audit, size)
        self.topo.stop(w2.run.proc, sig=signal.SIGKILL)
        self.audit_complete(w2, "SIGKILL", None, ())
        stale = elements(topo) or {}
        self.check(
            "SIGKILL: stale elements carry timeouts (fail open)",
            bool(stale) and all(0 < e <= 600 for e in stale.values()),
            f"{len(stale)} elements left, longest {max(stale.values(), default=0):.0f} s",
        )
        self.check(
            "SIGKILL: audit log keeps its bytes",
            self.audit.stat().st_size >= size and _sha(self.audit, size) == sha,
            f"{size} bytes",
        )
        w3 = self.start()
        self.check(
            "restart after SIGKILL: starts, API answers",
            w3.run.proc.poll() is None and "live" in w3.api(topo, "/metrics"),
        )
        fresh = elements(topo) or {}
        left = [k for k in before_kill if k in fresh]
        self.check(
            "restart after SIGKILL: no stale element in the new table",
            not left,
            f"{len(before_kill)} before the kill, {len(left)} still there",
        )
        self.check(
            "restart after SIGKILL: audit log not truncated",
            _sha(self.audit, size) == sha,
            f"first {size} bytes unchanged, now {self.audit.stat().st_size}",
        )
        self._manual_blocks(w3, 600)
        self._settle(20.0)
        text = w3.api(topo, "/metrics")
        self.check(
            "restart after SIGKILL: sees packets",
            metric(text, "shortflow_live_packets_total") > 0,
            f"{metric(text, 'shortflow_live_packets_total'):.0f} packets",
        )
        self._sigterm(w3, tables, "final SIGTERM")

    def _settle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.traffic.tick()
            time.sleep(1.0)


def run(args: argparse.Namespace, tmp: Path) -> int:
    with Lab(args.profile) as lab:
        topo = lab.topo
        foreign = tmp / "foreign.nft"
        foreign.write_text(FOREIGN)
        topo.run(topo.router_ns, ["nft", "-f", str(foreign)])
        tables = other_tables(topo)
        soak = Soak(lab, tmp, args)
        w = soak.start()
        soak.traffic.start(60.0 * args.minutes + 600.0)
        try:
            samples = soak.soak(w)
            soak.summary(samples)
            if not args.no_restarts and w.run.proc.poll() is None:
                soak.restarts(w, tables)
        finally:
            soak.traffic.stop()
        failed = [r for r in soak.results if not r[1]]
        print(
            f"== {len(soak.results) - len(failed)} of {len(soak.results)} checks passed"
            + (": FAILED " + "; ".join(r[0] for r in failed) if failed else ""),
            flush=True,
        )
        return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=30, help="length of the soak (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="growth is measured from this minute")
    ap.add_argument("--profile", default="wifi", help="lab network profile (default wifi)")
    ap.add_argument("--video-clients", type=int, default=2, help="video players at once")
    ap.add_argument("--video-s", type=float, default=120.0, help="s per video session")
    ap.add_argument("--web-s", type=float, default=60.0, help="s per web session")
    ap.add_argument("--dns-rate", type=float, default=5.0, help="DNS questions per second")
    ap.add_argument("--flood-first", type=float, default=240.0, help="s to the first SYN burst")
    ap.add_argument("--flood-every", type=float, default=300.0)
    ap.add_argument("--flood-count", type=int, default=20_000, help="SYNs per burst (<= 64000)")
    ap.add_argument("--flood-rate", type=float, default=4000.0, help="SYNs per second")
    ap.add_argument("--no-restarts", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs and audit log here")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child)
    if args.minutes < 1 or args.warmup < 0:
        ap.error("--minutes must be >= 1 and --warmup >= 0")
    with sigterm_as_interrupt():
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            return run(args, args.workdir)
        with tempfile.TemporaryDirectory(prefix="sf-soak-") as tmp:
            return run(args, Path(tmp))


def _child(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["syn", "dns"])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=4000.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--status", type=Path)
    a = ap.parse_args(argv)
    if a.what == "syn":
        t = time.monotonic()
        sent = syn_burst(CLIENT_IP, SERVER_IP, 9, a.count, a.rate, a.seed)
        print(f"{sent} SYNs in {time.monotonic() - t:.1f} s", flush=True)
    else:
        dns_loop(ROUTER_CLIENT_IP, a.rate, a.seconds, a.status, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
