"""Live-mode figures, measured through the lab's router namespace (root needed).

1. Packet rate: iperf3 UDP (64-byte payloads; ``--streams`` parallel iperf3 clients, each at
   a ``--rates`` bit rate, "0" = as fast as the sender goes) from the lab client to the lab
   server for ``--seconds``, through the router where `shortflow live` captures (AF_PACKET
   on the client-facing interface, or NFLOG from its nftables table) with each of
   ``--decoders``: packets/s shortflow handled and its loss (kernel drops / seen), against
   what iperf3 says it sent, all in the same run so the ratios compare.
2. Flow start -> verdict and flow start -> block: a lab Shorts session plays through the
   router while `shortflow live --enforce nft` runs; its API gives each flow's first verdict
   (seconds after the flow's first packet), its audit log the block times.
3. Memory (``memory``): `shortflow live` (default model, session model, API) holds
   ``--flows`` UDP flows from the lab client (one datagram per destination port, sent again
   every 20 s so none times out); its VmRSS is sampled every 2 s and printed with the
   flows with a verdict, the verdicts given so far (its API) and its CPU seconds, then its
   peak (VmHWM) against the RSS of the same process idle.
   The modules it imported are timed with ``PYTHONPROFILEIMPORTTIME`` (the ten largest
   top-level packages, cumulative).
4. Set update -> first drop (``block-latency``): paced UDP and TCP streams (one message
   every ``--interval-us``, ``benchmarks/paced.py``) run from the lab client to the lab
   server on port 443 while shortflow's table (`NftTable`, libnftables and `nft -j`) in the
   router namespace gets a ``block_flow`` / ``block_pair`` at T0, ``--repeats`` times per
   case, unblocked in between. The sender's and receiver's logs give, per block, the call
   time, T0 -> send time of the first message that never arrived, and T0 -> the last one
   that still got through.

All traffic stays inside the lab's namespaces (10.77.0.0/16, no route out); every phase is
bounded in time.

    python -m benchmarks.live [--seconds 10] [--decoders python,batch] [--streams 2]
        [--only rate,verdicts,block-latency,memory] [--repeats 20] [--flows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.lab_live import api, cpu_seconds, fresh_port, metric, status_kb
from classifier.enforce.audit import read_audit
from classifier.enforce.nft import Backend, NftTable
from training.lab.generate import Lab
from training.lab.live import start_live
from training.lab.scenarios import plan_session
from training.lab.topology import (
    CLIENT_IP,
    ROUTER_CLIENT_IF,
    ROUTER_CLIENT_IP,
    SERVER_IP,
    LabTopology,
    child_env,
    repo_root,
    wait_for_marker,
)

API_PORT = 0  # set per live run: each run gets a fresh port
#: The benchmarks' decoder names and `shortflow live --engine`'s.
_ENGINES = {"batch": "fast", "python": "reference"}


def _live(
    topo: LabTopology,
    tmp: Path,
    mode: str,
    capture: str = "afpacket",
    decoder: str = "batch",
    before: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `shortflow live` in the router namespace (``training.lab.live``) with the API on
    a fresh port; decoder batch or python (``--engine`` fast or reference), "before" runs
    the checkout ``before`` (code from before the option existed: its default path, no
    --engine)."""
    global API_PORT
    old = decoder == "before"
    run = start_live(
        topo,
        tmp,
        mode,
        capture=capture,
        engine=None if old else _ENGINES.get(decoder, decoder),
        api_port=fresh_port(),
        checkout=before if old else None,
    )
    API_PORT = run.port
    return run.proc, run.audit


def _api(topo: LabTopology, path: str) -> str:
    return api(topo, API_PORT, path)


_cpu_seconds = cpu_seconds
_metric = metric
_status_kb = status_kb


def _iperf_sent(log: Path) -> int:
    """Packets an iperf3 -J client sent, from its log (JSON, maybe after stderr lines)."""
    text = log.read_text()
    return int(json.loads(text[text.index("{") : text.rindex("}") + 1])["end"]["sum"]["packets"])


def _rx_packets(topo: LabTopology) -> int:
    """Packets the router took in on its client-facing interface: what reached the capture."""
    return int(
        topo.run(
            topo.router_ns, ["cat", f"/sys/class/net/{ROUTER_CLIENT_IF}/statistics/rx_packets"]
        ).stdout
    )


def _handled(topo: LabTopology, limit_s: float = 30.0) -> tuple[str, float]:
    """The live metrics once shortflow has caught up (its packet count still for 1 s, or
    ``limit_s`` passed), and how long that took."""
    start = time.monotonic()
    text, last = _api(topo, "/metrics"), -1.0
    while time.monotonic() - start < limit_s:
        count = _metric(text, "shortflow_live_packets_total")
        if count == last:
            break
        last = count
        time.sleep(1.0)
        text = _api(topo, "/metrics")
    return text, time.monotonic() - start - 1.0


def packet_rate(
    topo: LabTopology,
    tmp: Path,
    seconds: float,
    bitrate: str,
    capture: str,
    decoder: str,
    streams: int,
    before: Path | None,
    pin: int | None = None,
) -> None:
    """Plain lab topology (no delay line, no rate limit); ``bitrate`` is iperf3's ``-b`` per
    stream (payload bits/s; "0" = as fast as the sender goes).

    Offered = packets that reached the router (its client-facing interface counter; iperf3
    may send more than a loaded box forwards). Handled = what shortflow counted once it
    caught up; drops = what the kernel says it lost for shortflow (ring full, or NFLOG
    sequence gaps). CPU = the live process's CPU time over the run, per handled packet: on a
    shared machine the figure that says what one core can take.
    """
    live, _ = _live(topo, tmp, "dry-run", capture, decoder, before)
    if pin is not None:  # every thread of the live process on that one core
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(pin), str(live.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    ports = [5201 + i for i in range(streams)]
    servers = [
        topo.popen(
            topo.server_ns,
            ["iperf3", "-s", "-1", "-B", SERVER_IP, "-p", str(port)],
            log=tmp / f"iperf-s{port}.log",
        )
        for port in ports
    ]
    time.sleep(0.5)
    before_text, _ = _handled(topo)
    cpu_before = _cpu_seconds(live.pid)
    rx_before = _rx_packets(topo)
    logs = [tmp / f"iperf-c{port}-{capture}-{decoder}-{bitrate}.json" for port in ports]
    clients = [
        topo.popen(
            topo.client_ns,
            [
                "timeout",
                str(int(seconds) + 30),
                "iperf3",
                "-c",
                SERVER_IP,
                "-p",
                str(port),
                "-u",
                "-b",
                bitrate,
                "-l",
                "64",
                "-t",
                str(int(seconds)),
                "-J",
            ],
            log=log,
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    for client in clients:
        client.wait(timeout=seconds + 40)
    rx = _rx_packets(topo) - rx_before
    _, catch_up = _handled(topo)
    # once shortflow has caught up, one more packet through the router: NFLOG counts a
    # loss at the next message's sequence number, so a loss at the very end shows only then
    topo.run(
        topo.client_ns,
        [
            sys.executable,
            "-c",
            "import socket; socket.socket(socket."
            f"AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{SERVER_IP}', 9))",
        ],
    )
    after, _ = _handled(topo)
    cpu = _cpu_seconds(live.pid) - cpu_before
    for server in servers:
        topo.stop(server)
    topo.stop(live)
    sent = sum(_iperf_sent(log) for log in logs)
    seen = _metric(after, "shortflow_live_packets_total") - _metric(
        before_text, "shortflow_live_packets_total"
    )
    drops = _metric(after, "shortflow_live_drops_total") - _metric(
        before_text, "shortflow_live_drops_total"
    )
    print(
        f"{capture:8} {decoder:6} {streams}x -b {bitrate:>4}: sent {sent / seconds:>7,.0f}/s, "
        f"offered {rx / seconds:>7,.0f}/s, handled {seen / seconds:>7,.0f}/s "
        f"({seen / max(rx, 1):.3f} of offered, caught up {catch_up:.0f} s after), "
        f"drops {drops:,.0f} = loss {drops / max(seen + drops, 1):.2%}; "
        f"{cpu / max(seen, 1) * 1e6:.2f} CPU us/packet"
        + (f" (pinned to CPU {pin})" if pin is not None else ""),
        flush=True,
    )


def verdict_times(lab: Lab, tmp: Path) -> None:
    live, audit = _live(lab.topo, tmp, "nft")
    plan = plan_session("shorts", 7001, duration_s=30)
    plan_file = tmp / "plan.json"
    plan_file.write_text(plan.to_json())
    player = lab.topo.popen(
        lab.topo.client_ns,
        [
            sys.executable,
            "-m",
            "training.lab.players",
            "--plan",
            str(plan_file),
            "--ca",
            str(lab.ca),
            "--result",
            str(tmp / "result.json"),
            "--dns",
            ROUTER_CLIENT_IP,
        ],
        log=tmp / "player.log",
        env=child_env(),
        cwd=repo_root(),
    )
    player.wait(timeout=120)
    flows = json.loads(_api(lab.topo, "/v1/live/flows"))["flows"]
    lab.topo.stop(live)
    firsts = [f["first_verdict"]["at"] for f in flows if f["key"]["server_port"] == 443]
    starts = {
        (f["key"]["client"], f["key"]["server"], f["key"]["server_port"]): f["first_verdict"][
            "flow_start"
        ]
        for f in flows
    }
    to_block = []
    for e in read_audit(audit):
        start = starts.get((e["client"], e["server"], e["port"]))
        if e["action"] == "block" and start is not None and not e.get("renewed"):
            to_block.append(datetime.fromisoformat(e["time"]).timestamp() - start)
    if firsts:
        print(
            f"flow start -> first verdict: median {statistics.median(firsts):.2f} s, "
            f"max {max(firsts):.2f} s over {len(firsts)} flows (first check point 1 s)"
        )
    if to_block:
        print(
            f"flow start -> block: median {statistics.median(to_block):.2f} s, "
            f"max {max(to_block):.2f} s over {len(to_block)} blocked flows"
        )
    else:
        print("flow start -> block: no block in this session")


def _peer(
    topo: LabTopology, ns: str, tmp: Path, name: str, argv: list[str], marker: str
) -> subprocess.Popen[bytes]:
    """Start ``benchmarks/paced.py`` in ``ns`` (writes ``paced-NAME.npz`` when stopped)."""
    log = tmp / f"paced-{name}.log"
    proc = topo.popen(
        ns,
        [sys.executable, "-m", "benchmarks.paced", *argv, "--out", str(tmp / f"paced-{name}.npz")],
        log=log,
        env=child_env(),
        cwd=repo_root(),
    )
    wait_for_marker(proc, log, marker, 30.0)
    return proc


def _dist(values: list[float]) -> str:
    """median / p95 / max of ``values`` (seconds) in ms, or "-"."""
    if not values:
        return "-"
    v = np.asarray(values) * 1e3
    return f"{np.median(v):.2f} / {np.percentile(v, 95):.2f} / {v.max():.2f}"


def _drop_point(
    sent: np.ndarray, got: np.ndarray, t0: float, end: float
) -> tuple[float, float | None] | None:
    """For a block set at ``t0`` and lifted at ``end``: (send time of the first message that
    never arrived with nothing after it getting through, send time of the last one that got
    through after ``t0`` or None), both relative to ``t0``; None if no such drop."""
    window = (sent >= t0) & (sent < end)
    w_sent, w_got = sent[window], got[window]
    through = w_sent[w_got]
    last = float(through.max()) if len(through) else None
    lost = w_sent[~w_got & (w_sent > (last if last is not None else -np.inf))]
    if not len(lost):
        return None
    return float(lost[0]) - t0, (last - t0 if last is not None else None)


def block_latency(
    topo: LabTopology,
    tmp: Path,
    repeats: int,
    backends: list[Backend],
    interval_us: float,
    hold_s: float = 0.1,
    gap_s: float = 0.25,
) -> None:
    """Set update -> first dropped packet of running UDP and TCP flows (port 443).

    Per backend, ``repeats`` times each: ``block_flow`` for the UDP flow, ``block_flow`` for
    the TCP flow, ``block_pair`` (both flows); T0 just before the call, T1 after it returns;
    the block is lifted (``unblock``) after ``hold_s`` and the flows get ``gap_s`` to run
    (the TCP sender reconnects) before the next one.
    """
    cases = [("flow", "udp"), ("flow", "tcp"), ("pair", "udp+tcp")]
    limit = 30 + len(backends) * len(cases) * repeats * (hold_s + gap_s + 0.3)
    recv = _peer(
        topo,
        topo.server_ns,
        tmp,
        "recv",
        ["recv", "--bind", SERVER_IP, "--port", "443", "--seconds", f"{limit:.0f}"],
        "receiving",
    )
    senders = [
        _peer(
            topo,
            topo.client_ns,
            tmp,
            proto,
            [
                "send",
                "--to",
                SERVER_IP,
                "--port",
                "443",
                "--proto",
                proto,
                "--interval-us",
                str(interval_us),
                "--seconds",
                f"{limit:.0f}",
            ],
            "sending",
        )
        for proto in ("udp", "tcp")
    ]
    time.sleep(0.5)
    events: list[tuple[str, str, str, float, float, float]] = []
    for backend in backends:
        with NftTable(topo.router_ns, backend=backend) as table:
            table.create()
            try:
                for call, proto in cases:
                    for _ in range(repeats):
                        t0 = time.monotonic()
                        if call == "flow":
                            table.block_flow(CLIENT_IP, SERVER_IP, 443, proto, 60)
                        else:
                            table.block_pair(CLIENT_IP, SERVER_IP, 60)
                        t1 = time.monotonic()
                        time.sleep(hold_s)
                        end = time.monotonic()
                        if call == "flow":
                            table.unblock(CLIENT_IP, SERVER_IP, 443, proto)
                        else:
                            table.unblock(CLIENT_IP, SERVER_IP)
                        events.append((table.backend, call, proto, t0, t1, end))
                        time.sleep(gap_s)
            finally:
                table.delete()
    for proc in (*senders, recv):
        topo.stop(proc, wait_s=20.0)
    got = np.load(tmp / "paced-recv.npz")
    logs = {p: np.load(tmp / f"paced-{p}.npz") for p in ("udp", "tcp")}
    print(
        f"set update -> first drop, {repeats} blocks per row (libnftables = lib, nft -j = "
        f"cli); sender every {interval_us:.0f} us; ms as median / p95 / max:"
    )
    for proto in ("udp", "tcp"):
        sent, seq = logs[proto]["sent_sent"], logs[proto]["sent_seq"]
        arrived = np.isin(seq, got[f"{proto}_seq"])
        blocked = np.zeros(len(sent), dtype=bool)
        for *_, t0, _t1, end in events:
            blocked |= (sent >= t0) & (sent < end + 0.05)
        step = np.median(np.diff(sent)) * 1e6 if len(sent) > 1 else 0.0
        print(
            f"  {proto}: {len(sent):,} sent, median step {step:.0f} us; lost outside block "
            f"windows: {int((~arrived & ~blocked).sum())}"
        )
        for used in dict.fromkeys(e[0] for e in events):
            for call, protos in cases:
                if proto not in protos:
                    continue
                rows = [e for e in events if e[:3] == (used, call, protos)]
                calls, firsts, lasts, gaps, resets, missed = [], [], [], [], [], 0
                for *_, t0, t1, end in rows:
                    calls.append(t1 - t0)
                    point = _drop_point(sent, arrived, t0, end)
                    if point is None:
                        missed += 1
                        continue
                    firsts.append(point[0])
                    gaps.append(point[0] - (point[1] or 0.0))
                    if point[1] is not None:
                        lasts.append(point[1])
                    reset = logs[proto]["reset_at"]
                    seen = reset[(reset >= t0) & (reset < end)]
                    if len(seen):
                        resets.append(float(seen.min()) - t0)
                extra = f"; reset seen by sender {_dist(resets)}" if proto == "tcp" else ""
                print(
                    f"  {used:3} block_{call:4} {proto}: call {_dist(calls)}; "
                    f"T0 -> first dropped sent {_dist(firsts)}; T0 -> last through "
                    f"{_dist(lasts)} ({len(lasts)} of {len(rows)}); last through -> "
                    f"first dropped {_dist(gaps)}{extra}"
                    + (f"; {missed} without a drop" if missed else ""),
                    flush=True,
                )


def _import_times(log: Path, top: int = 10) -> list[tuple[str, float]]:
    """The ``top`` top-level packages by cumulative import time (ms) in a
    ``PYTHONPROFILEIMPORTTIME`` log (lines ``import time: self | cumulative | name``, where
    a nested import's name is indented)."""
    totals: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]  # one space follows the bar; more mean a nested import
        if name.startswith(" "):
            continue
        package = name.split(".", 1)[0]
        totals[package] = totals.get(package, 0.0) + int(parts[1]) / 1000
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def memory(topo: LabTopology, tmp: Path, flows: int, seconds: float = 80.0) -> None:
    """Peak RSS of `shortflow live` holding ``flows`` UDP flows (see the module doc)."""
    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
    try:
        proc, _ = _live(topo, tmp, "dry-run")
    finally:
        del os.environ["PYTHONPROFILEIMPORTTIME"]
    try:
        time.sleep(2.0)
        idle_kb = _status_kb(proc.pid, "VmRSS")
        sender = (
            "import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"n, end = {flows}, time.monotonic() + {seconds}\n"
            "while time.monotonic() < end:\n"
            "    for i in range(n):\n"
            f"        s.sendto(b'x' * 32, ('{SERVER_IP}', 10000 + i % 50000 ))\n"
            "    time.sleep(20)\n"
        )
        if flows > 50_000:
            raise SystemExit("--flows: at most 50000 (one flow per destination port)")
        send = topo.popen(topo.client_ns, [sys.executable, "-c", sender], log=tmp / "udp.log")
        start, peak_flows, samples = time.monotonic(), 0, []
        while time.monotonic() - start < seconds + 5 and proc.poll() is None:
            time.sleep(2.0)
            text = _api(topo, "/metrics")
            active = int(_metric(text, "shortflow_live_active_flows"))
            verdicts = int(_metric(text, "shortflow_live_verdicts_total"))
            peak_flows = max(peak_flows, active)
            rss = _status_kb(proc.pid, "VmRSS")
            cpu = _cpu_seconds(proc.pid)
            samples.append((time.monotonic() - start, rss, active, verdicts, cpu))
        send.wait(timeout=30)
        hwm_kb = _status_kb(proc.pid, "VmHWM")
    finally:
        topo.stop(proc)
    print(f"== memory: {flows} UDP flows, default model, dry-run, API on")
    print("   t s    RSS MiB   flows with a verdict   verdicts given   CPU s")
    for t, kb, active, verdicts, cpu in samples:
        print(f"{t:6.0f} {kb / 1024:9.1f} {active:12d} {verdicts:16d} {cpu:11.1f}")
    print(
        f"idle RSS {idle_kb / 1024:.1f} MiB; peak RSS (VmHWM) {hwm_kb / 1024:.1f} MiB with up to "
        f"{peak_flows} flows; per flow {(hwm_kb - idle_kb) * 1024 / max(peak_flows, 1):.0f} B"
    )
    print("imports, cumulative ms (top-level packages):")
    for name, ms in _import_times(tmp / "live-dry-run.log"):
        print(f"  {name:20s} {ms:8.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--captures", default="afpacket,nflog")
    ap.add_argument(
        "--decoders",
        default="python,batch",
        help='live\'s --decoder values to compare, in the same run; "before" '
        "runs the checkout given by --before",
    )
    ap.add_argument(
        "--before",
        type=Path,
        default=None,
        help="an older checkout (e.g. `git archive REV | tar -x -C DIR`)",
    )
    ap.add_argument(
        "--rates",
        default="20M,40M,0",
        help="iperf3 -b per stream (64 B payloads: 20M ~ 39k pkt/s per stream)",
    )
    ap.add_argument("--streams", type=int, default=2, help="parallel iperf3 clients")
    ap.add_argument(
        "--pin", type=int, default=None, help="rate: run shortflow live on this CPU only"
    )
    ap.add_argument("--no-verdicts", action="store_true", help="skip the verdict-time phase")
    ap.add_argument(
        "--only",
        default="rate,verdicts,block-latency",
        help="phases to run: rate, verdicts, block-latency, memory",
    )
    ap.add_argument("--flows", type=int, default=50_000, help="memory: UDP flows to hold")
    ap.add_argument("--repeats", type=int, default=20, help="block-latency: blocks per row")
    ap.add_argument("--backends", default="lib,cli", help="block-latency: NftTable backends")
    ap.add_argument(
        "--interval-us",
        type=float,
        default=100.0,
        help="block-latency: one UDP datagram / TCP record every so many us",
    )
    args = ap.parse_args()
    phases = set(args.only.split(","))
    known: tuple[Backend, ...] = ("lib", "cli")
    backends = [b for b in known if b in args.backends.split(",")]
    with tempfile.TemporaryDirectory(prefix="sf-bench-live-") as tmp:
        with LabTopology() as topo:
            for bitrate in args.rates.split(",") if "rate" in phases else []:
                for capture in args.captures.split(","):
                    for decoder in args.decoders.split(","):
                        packet_rate(
                            topo,
                            Path(tmp),
                            args.seconds,
                            bitrate,
                            capture,
                            decoder,
                            args.streams,
                            args.before,
                            args.pin,
                        )
            if "memory" in phases:
                memory(topo, Path(tmp), args.flows)
            if "block-latency" in phases:
                block_latency(topo, Path(tmp), args.repeats, backends, args.interval_us)
        if "verdicts" in phases and not args.no_verdicts:
            with Lab("fibre") as lab:
                verdict_times(lab, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
