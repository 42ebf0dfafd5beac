"""Benchmark the embedded DNS forwarder: queries per second and loss, on loopback only.

An upstream dnsmasq on 127.0.0.2 answers ``*.lab.test`` locally; the forwarder
(:class:`classifier.enforce.DnsSinkhole`) runs in its own process on 127.0.0.3; this process
sends queries with a fixed number in flight and counts answers, timeouts and latency.
Bounded: at most ``--queries`` queries and ``--max-seconds`` seconds.

    python benchmarks/dns.py --queries 20000 --inflight 64
    python benchmarks/dns.py --direct          # the same load straight at dnsmasq
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.enforce.dns_sinkhole import DnsSinkhole  # noqa: E402
from classifier.enforce.policy import parse_policy  # noqa: E402

UPSTREAM_HOST = "127.0.0.2"
FORWARDER_HOST = "127.0.0.3"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _query(qid: int, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def _serve(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    ready: EventType,
    stop: EventType,
    sinkhole_names: list[str],
) -> None:
    policy = parse_policy({"mode": "nft", "sinkhole": {"names": sinkhole_names}}, "bench")
    answers = [0]

    def on_answer(payload: bytes, ts: float) -> None:
        answers[0] += 1

    sink = DnsSinkhole(listen, upstream, policy=policy, on_answer=on_answer, timeout_s=1.0)
    sink.start()
    ready.set()
    stop.wait(120)
    sink.stop()
    print(f"forwarder stats: {sink.stats}, on_answer calls: {answers[0]}", flush=True)


def _load(
    target: tuple[str, int], queries: int, inflight: int, max_s: float, sinkhole_share: float
) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(target)
    sock.setblocking(False)
    rnd = random.Random(7)
    pending: dict[int, float] = {}
    latencies: list[float] = []
    sent = lost = 0
    t0 = time.monotonic()
    deadline = t0 + max_s
    next_id = 0
    while (sent < queries or pending) and time.monotonic() < deadline:
        while sent < queries and len(pending) < inflight:
            qid = next_id
            next_id = (next_id + 1) & 0xFFFF
            if qid in pending:
                break
            name = (
                f"x{sent}.tiktok.com"
                if rnd.random() < sinkhole_share
                else f"h{rnd.randrange(10**6)}.lab.test"
            )
            sock.send(_query(qid, name))
            pending[qid] = time.monotonic()
            sent += 1
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            now = time.monotonic()
            for qid in [q for q, t in pending.items() if now - t > 1.0]:
                del pending[qid]
                lost += 1
            time.sleep(0.0001)
            continue
        qid = struct.unpack_from("!H", data)[0]
        start = pending.pop(qid, None)
        if start is not None:
            latencies.append(time.monotonic() - start)
    elapsed = time.monotonic() - t0
    lost += len(pending)
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "sent": sent,
        "answered": len(latencies),
        "lost": lost,
        "seconds": elapsed,
        "qps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument(
        "--sinkhole-share",
        type=float,
        default=0.0,
        help="fraction of queries for sinkholed names (answered locally)",
    )
    ap.add_argument("--direct", action="store_true", help="send straight to dnsmasq")
    args = ap.parse_args()
    if shutil.which("dnsmasq") is None:
        print("dnsmasq is not installed", file=sys.stderr)
        return 2
    up_port = _free_port(UPSTREAM_HOST)
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--address=/lab.test/10.77.0.9",
        f"--port={up_port}",
        f"--listen-address={UPSTREAM_HOST}",
        "--bind-interfaces",
        "--pid-file=",
        "--dns-forward-max=1000",
        *(["--user=root"] if os.geteuid() == 0 else []),
    ]
    upstream = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = None
    try:
        time.sleep(0.3)
        target = (UPSTREAM_HOST, up_port)
        if not args.direct:
            target = (FORWARDER_HOST, _free_port(FORWARDER_HOST))
            server = ctx.Process(
                target=_serve, args=(target, (UPSTREAM_HOST, up_port), ready, stop, ["tiktok.com"])
            )
            server.start()
            if not ready.wait(10):
                print("forwarder did not start", file=sys.stderr)
                return 1
        _load(target, min(500, args.queries), args.inflight, 10, 0.0)  # warm-up
        r = _load(target, args.queries, args.inflight, args.max_seconds, args.sinkhole_share)
        what = "dnsmasq direct" if args.direct else "DnsSinkhole -> dnsmasq"
        print(
            f"{what}: {r['qps']:.0f} queries/s, {int(r['answered'])}/{int(r['sent'])} "
            f"answered, {int(r['lost'])} lost ({100 * r['lost'] / max(1, r['sent']):.2f} %), "
            f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"{args.inflight} in flight, {r['seconds']:.1f} s"
        )
    finally:
        stop.set()
        if server is not None:
            server.join(10)
            if server.is_alive():
                server.kill()
        upstream.terminate()
        upstream.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
