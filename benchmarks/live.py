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

All traffic stays inside the lab's namespaces (10.77.0.0/16, no route out); every phase is
bounded in time.

    python benchmarks/live.py [--seconds 10] [--decoders python,batch] [--streams 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from classifier.enforce.audit import read_audit
from training.lab.generate import Lab
from training.lab.scenarios import plan_session
from training.lab.topology import (
    ROUTER_CLIENT_IF,
    ROUTER_CLIENT_IP,
    SERVER_IP,
    LabTopology,
    child_env,
    repo_root,
    wait_for_marker,
)

_ports = itertools.count(18081)
API_PORT = 0  # set per live run: each run gets a fresh port


def _live(topo: LabTopology, tmp: Path, mode: str, capture: str = "afpacket",
          decoder: str = "batch", before: Path | None = None
          ) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `shortflow live` in the router namespace; decoder "before" runs the checkout
    ``before`` (code from before this option existed: its default path, no --decoder)."""
    global API_PORT
    API_PORT = next(_ports)
    audit = tmp / f"audit-{mode}-{API_PORT}.jsonl"
    log = tmp / f"live-{mode}.log"
    policy = tmp / "policy.toml"
    policy.write_text(f'mode = "{mode}"\nblock_seconds = 60\n[agreement]\nk = 2\nn = 3\n'
                      'threshold = 0.5\n')
    root, env = repo_root(), child_env()
    if decoder == "before" and before is not None:
        root = before
        env["PYTHONPATH"] = str(before) + os.pathsep + env["PYTHONPATH"]
    argv = [sys.executable, "-m", "classifier.cli", "live", "--iface", ROUTER_CLIENT_IF,
            "--capture", capture, "--enforce", mode, "--policy", str(policy), "--audit-log",
            str(audit), "--dns-listen", f"{ROUTER_CLIENT_IP}:53", "--dns-upstream",
            "10.77.20.53", "--api", f"127.0.0.1:{API_PORT}"]
    if decoder != "before":
        argv += ["--decoder", decoder]
    proc = topo.popen(topo.router_ns, argv, log=log, env=env, cwd=root)
    wait_for_marker(proc, log, "live on", 60.0)
    for _ in range(50):  # the API thread starts after the marker
        if topo.run(topo.router_ns, ["curl", "-s", "-o", "/dev/null", "--max-time", "1",
                                     f"http://127.0.0.1:{API_PORT}/healthz"],
                    check=False).returncode == 0:
            break
        time.sleep(0.2)
    return proc, audit


def _api(topo: LabTopology, path: str) -> str:
    return topo.run(topo.router_ns, [
        "curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{API_PORT}{path}"]).stdout


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _iperf_sent(log: Path) -> int:
    """Packets an iperf3 -J client sent, from its log (JSON, maybe after stderr lines)."""
    text = log.read_text()
    return int(json.loads(text[text.index("{"):text.rindex("}") + 1])["end"]["sum"]["packets"])


def _rx_packets(topo: LabTopology) -> int:
    """Packets the router took in on its client-facing interface: what reached the capture."""
    return int(topo.run(topo.router_ns, [
        "cat", f"/sys/class/net/{ROUTER_CLIENT_IF}/statistics/rx_packets"]).stdout)


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


def packet_rate(topo: LabTopology, tmp: Path, seconds: float, bitrate: str, capture: str,
                decoder: str, streams: int, before: Path | None) -> None:
    """Plain lab topology (no delay line, no rate limit); ``bitrate`` is iperf3's ``-b`` per
    stream (payload bits/s; "0" = as fast as the sender goes).

    Offered = packets that reached the router (its client-facing interface counter; iperf3
    may send more than a loaded box forwards). Handled = what shortflow counted once it
    caught up; drops = what the kernel says it lost for shortflow (ring full, or NFLOG
    sequence gaps). CPU = the live process's CPU time over the run, per handled packet: on a
    shared machine the figure that says what one core can take.
    """
    live, _ = _live(topo, tmp, "dry-run", capture, decoder, before)
    ports = [5201 + i for i in range(streams)]
    servers = [topo.popen(topo.server_ns, ["iperf3", "-s", "-1", "-B", SERVER_IP, "-p",
                                           str(port)], log=tmp / f"iperf-s{port}.log")
               for port in ports]
    time.sleep(0.5)
    before_text, _ = _handled(topo)
    cpu_before = _cpu_seconds(live.pid)
    rx_before = _rx_packets(topo)
    logs = [tmp / f"iperf-c{port}-{capture}-{decoder}-{bitrate}.json" for port in ports]
    clients = [topo.popen(topo.client_ns, [
        "timeout", str(int(seconds) + 30), "iperf3", "-c", SERVER_IP, "-p", str(port), "-u",
        "-b", bitrate, "-l", "64", "-t", str(int(seconds)), "-J"], log=log)
        for port, log in zip(ports, logs, strict=True)]
    for client in clients:
        client.wait(timeout=seconds + 40)
    rx = _rx_packets(topo) - rx_before
    _, catch_up = _handled(topo)
    # once shortflow has caught up, one more packet through the router: NFLOG counts a
    # loss at the next message's sequence number, so a loss at the very end shows only then
    topo.run(topo.client_ns, [sys.executable, "-c", "import socket; socket.socket(socket."
                              f"AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{SERVER_IP}', 9))"])
    after, _ = _handled(topo)
    cpu = _cpu_seconds(live.pid) - cpu_before
    for server in servers:
        topo.stop(server)
    topo.stop(live)
    sent = sum(_iperf_sent(log) for log in logs)
    seen = _metric(after, "shortflow_live_packets_total") - _metric(
        before_text, "shortflow_live_packets_total")
    drops = _metric(after, "shortflow_live_drops_total") - _metric(
        before_text, "shortflow_live_drops_total")
    print(f"{capture:8} {decoder:6} {streams}x -b {bitrate:>4}: sent {sent / seconds:>7,.0f}/s, "
          f"offered {rx / seconds:>7,.0f}/s, handled {seen / seconds:>7,.0f}/s "
          f"({seen / max(rx, 1):.3f} of offered, caught up {catch_up:.0f} s after), "
          f"drops {drops:,.0f} = loss {drops / max(seen + drops, 1):.2%}; "
          f"{cpu / max(seen, 1) * 1e6:.1f} CPU us/packet", flush=True)


def verdict_times(lab: Lab, tmp: Path) -> None:
    live, audit = _live(lab.topo, tmp, "nft")
    plan = plan_session("shorts", 7001, duration_s=30)
    plan_file = tmp / "plan.json"
    plan_file.write_text(plan.to_json())
    player = lab.topo.popen(lab.topo.client_ns, [
        sys.executable, "-m", "training.lab.players", "--plan", str(plan_file), "--ca",
        str(lab.ca), "--result", str(tmp / "result.json"), "--dns", ROUTER_CLIENT_IP],
        log=tmp / "player.log", env=child_env(), cwd=repo_root())
    player.wait(timeout=120)
    flows = json.loads(_api(lab.topo, "/v1/live/flows"))["flows"]
    lab.topo.stop(live)
    firsts = [f["first_verdict"]["at"] for f in flows if f["key"]["server_port"] == 443]
    starts = {(f["key"]["client"], f["key"]["server"], f["key"]["server_port"]):
              f["first_verdict"]["flow_start"] for f in flows}
    to_block = []
    for e in read_audit(audit):
        start = starts.get((e["client"], e["server"], e["port"]))
        if e["action"] == "block" and start is not None and not e.get("renewed"):
            to_block.append(datetime.fromisoformat(e["time"]).timestamp() - start)
    if firsts:
        print(f"flow start -> first verdict: median {statistics.median(firsts):.2f} s, "
              f"max {max(firsts):.2f} s over {len(firsts)} flows (first check point 1 s)")
    if to_block:
        print(f"flow start -> block: median {statistics.median(to_block):.2f} s, "
              f"max {max(to_block):.2f} s over {len(to_block)} blocked flows")
    else:
        print("flow start -> block: no block in this session")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--captures", default="afpacket,nflog")
    ap.add_argument("--decoders", default="python,batch",
                    help="live's --decoder values to compare, in the same run; \"before\" "
                    "runs the checkout given by --before")
    ap.add_argument("--before", type=Path, default=None,
                    help="an older checkout (e.g. `git archive REV | tar -x -C DIR`)")
    ap.add_argument("--rates", default="20M,40M,0",
                    help="iperf3 -b per stream (64 B payloads: 20M ~ 39k pkt/s per stream)")
    ap.add_argument("--streams", type=int, default=2, help="parallel iperf3 clients")
    ap.add_argument("--no-verdicts", action="store_true", help="skip the verdict-time phase")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sf-bench-live-") as tmp:
        with LabTopology() as topo:
            for bitrate in args.rates.split(","):
                for capture in args.captures.split(","):
                    for decoder in args.decoders.split(","):
                        packet_rate(topo, Path(tmp), args.seconds, bitrate, capture, decoder,
                                    args.streams, args.before)
        if not args.no_verdicts:
            with Lab("fibre") as lab:
                verdict_times(lab, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
