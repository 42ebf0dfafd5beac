"""Floods and long captures: memory and time of the flow table and of ``shortflow featurize``.

Generates captures into a scratch folder (default /tmp, never the repo) with the numpy
writers of ``tests/synthetic_captures.py``, runs each measurement in a child process (so
peak RSS is that run's own), prints the figures and deletes the files afterwards.

* ``syn``: a SYN flood, one packet per distinct 5-tuple (10.77.128.0/17 sources, 16
  source ports each, to 10.77.0.1:80), 100k packets per second of capture time;
* ``udp``: a UDP scan, one datagram per destination (10.77.64.0/18, ports 1-65535);
* ``long``: one TCP flow of N packets (MTU-sized on the wire, 54 bytes captured);
* ``seq``: a long capture of sequential TCP flows (full 1514-byte frames, 500 packets
  each, closed by FIN both ways), sized in MB.

Figures printed per run: packets, flows, flows held at peak, evictions, flows cut by the
per-flow packet cap, wall seconds, microseconds per packet (wall, and CPU time: the
machine may be shared, so compare sizes by CPU time), peak RSS (MiB, the child's own
VmHWM) and, for the flow table, MiB per held flow above the baseline.

Usage::

    python benchmarks/floods.py                 # the full sizes (1M flows, 10M packets,
                                                #  300 MB / 1.2 GB captures): ~20-30 min
    python benchmarks/floods.py --quick         # small sizes, a minute or two
    python benchmarks/floods.py --only table    # table | featurize | stream
    python benchmarks/floods.py --engine reference  # featurize with the reference path
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.synthetic_captures import (  # noqa: E402 (after the path setup)
    write_long_flow,
    write_sequential_flows,
    write_syn_flood,
    write_udp_scan,
)

__all__ = ["measure_table", "measure_featurize", "main"]

# -- measurements (each in a child process) ------------------------------------------------


def _vm(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child_table(path: str, max_flows: int, max_packets: int | None) -> dict[str, float]:
    """Read ``path`` and feed every packet to the live flow table (with the names plugin,
    as featurize and live use it), popping ended flows as live mode does."""
    from classifier.capture import open_capture
    from classifier.flows import FlowConfig, FlowTable
    from classifier.names.plugin import NamesPlugin

    table = FlowTable(
        FlowConfig(max_flows=max_flows, max_packets=max_packets), plugins=[NamesPlugin()]
    )
    base = _vm("VmRSS")
    start = time.perf_counter()
    cpu_start = time.process_time()
    n = 0
    for pkt in open_capture(path):
        table.add(pkt)
        n += 1
        if n & 4095 == 0:
            table.pop_ended()
    held_rss = _vm("VmRSS")
    held = len(table)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    table.flush()
    table.pop_ended()
    st = table.stats
    return {
        "packets": n,
        "flows": st.flows,
        "peak_flows": st.peak_flows,
        "held": held,
        "evicted": st.evicted,
        "packet_capped": st.packet_capped,
        "seconds": seconds,
        "us_per_packet": seconds / max(n, 1) * 1e6,
        "cpu_us_per_packet": cpu / max(n, 1) * 1e6,
        "peak_rss_mib": _vm("VmHWM"),
        "base_rss_mib": base,
        "mib_per_held_flow": (held_rss - base) / held if held else float("nan"),
    }


def _run_child(args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "_child", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure_table(
    path: Path, max_flows: int, max_packets: int | None = 1_000_000
) -> dict[str, float]:
    """Flow-table figures for one capture (child process)."""
    return _run_child(["table", str(path), str(max_flows), str(max_packets or 0)])


def _child_featurize(argv: list[str]) -> dict[str, float]:
    """Run ``shortflow featurize ARGV`` in this process; its own peak RSS (VmHWM).

    (The rusage of a child is no good here: Linux carries the parent's high-water mark
    over fork + exec, and the parent has just written a capture with big numpy arrays.)"""
    from classifier.cli import main as cli_main

    status = cli_main(["featurize", *argv])
    return {"status": status, "peak_rss_mib": _vm("VmHWM")}


def measure_featurize(path: Path, out: Path, extra: list[str] | None = None) -> dict[str, float]:
    """Run ``shortflow featurize`` on ``path`` in a child; wall seconds and peak RSS."""
    argv = [sys.executable, __file__, "_featurize", str(path), "-o", str(out), "-q", *(extra or [])]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"featurize failed ({proc.returncode}): {proc.stderr.strip()}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else ""
    return {
        "seconds": seconds,
        "peak_rss_mib": result["peak_rss_mib"],
        "output_mib": out.stat().st_size / 2**20,
        "summary": summary,
    }  # type: ignore[dict-item]


# -- the report --------------------------------------------------------------------------------


def _fmt(d: dict[str, float]) -> str:
    parts = []
    for k, v in d.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def _table_runs(tmp: Path, sizes: list[int], long_packets: list[int], cap: int) -> None:
    print(f"## live flow table (max_flows={cap}, names plugin), read from pcap")
    for kind, writer in (("syn", write_syn_flood), ("udp", write_udp_scan)):
        for n in sizes:
            path = tmp / f"{kind}-{n}.pcap"
            size = writer(path, n)
            r = measure_table(path, cap)
            print(f"{kind} flood {n} flows ({size / 2**20:.0f} MiB file): {_fmt(r)}", flush=True)
            path.unlink()
    for n in long_packets:
        path = tmp / f"long-{n}.pcap"
        size = write_long_flow(path, n)
        for cap_pk in (1_000_000, 0):
            r = measure_table(path, cap, cap_pk or None)
            print(
                f"one flow of {n} packets ({size / 2**20:.0f} MiB file), "
                f"max_packets={cap_pk or None}: {_fmt(r)}",
                flush=True,
            )
        path.unlink()


def _featurize_runs(
    tmp: Path, flows: list[int], long_packets: list[int], cap: int, engine: str
) -> None:
    print(f"## shortflow featurize --engine {engine} on floods (--max-flows {cap})")
    shapes = (("syn flood", write_syn_flood), ("udp scan", write_udp_scan))
    for n in flows:
        for kind, writer in shapes:
            path = tmp / f"{kind.split()[0]}-{n}.pcap"
            writer(path, n)
            r = measure_featurize(
                path, tmp / "out.parquet", ["--max-flows", str(cap), "--engine", engine]
            )
            print(f"{kind} {n} flows: {_fmt(r)}", flush=True)
            path.unlink()
    for n in long_packets:
        path = tmp / f"long-{n}.pcap"
        write_long_flow(path, n)
        r = measure_featurize(path, tmp / "out.parquet", ["--engine", engine])
        print(f"one flow of {n} packets (--max-packets 1000000): {_fmt(r)}", flush=True)
        path.unlink()


def _stream_runs(tmp: Path, megabytes: Sequence[float], engine: str) -> None:
    print(f"## shortflow featurize --engine {engine} on long captures of sequential flows")
    for mb in megabytes:
        path = tmp / f"seq-{mb:g}.pcap"
        size, flows = write_sequential_flows(path, mb)
        r = measure_featurize(path, tmp / "out.parquet", ["--engine", engine])
        print(f"{size / 1e6:.0f} MB, {flows} flows of 500 packets: {_fmt(r)}", flush=True)
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", choices=["table", "featurize", "stream"], default=None)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--engine",
        choices=["fast", "reference"],
        default="fast",
        help="featurize engine for the featurize and stream runs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        sizes, longs, feat, mbs, cap = (
            [50_000, 200_000],
            [500_000, 2_000_000],
            [5_000],
            [30, 120],
            50_000,
        )
    else:
        sizes, longs, feat, mbs, cap = (
            [250_000, 1_000_000],
            [2_500_000, 10_000_000],
            [100_000, 1_000_000],
            [300, 1200],
            200_000,
        )
    with tempfile.TemporaryDirectory(prefix="sf-floods-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        if args.only in (None, "table"):
            _table_runs(tmp, sizes, longs, cap)
        if args.only in (None, "featurize"):
            _featurize_runs(tmp, feat, longs[-1:], cap, args.engine)
        if args.only in (None, "stream"):
            _stream_runs(tmp, mbs, args.engine)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_featurize":
        print(json.dumps(_child_featurize(sys.argv[2:])))
        sys.exit(0)
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        _, _, what, path_arg, flows_arg, packets_arg = sys.argv
        res = _child_table(path_arg, int(flows_arg), int(packets_arg) or None)
        print(json.dumps(res))
        sys.exit(0)
    sys.exit(main())
