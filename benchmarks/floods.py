"""Floods and long captures: memory and time of the flow table and of ``shortflow featurize``.

Generates captures into a scratch folder (default /tmp, never the repo) with a fast numpy
pcap writer, runs each measurement in a child process (so peak RSS is that run's own),
prints the figures and deletes the files afterwards.

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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = [
    "write_records",
    "write_syn_flood",
    "write_udp_scan",
    "write_long_flow",
    "write_sequential_flows",
    "measure_table",
    "measure_featurize",
    "main",
]

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_PCAP_HEADER = (
    np.array([0xA1B2C3D4], "<u4").tobytes()
    + np.array([2, 4], "<u2").tobytes()
    + np.array([0, 0, 262144, 1], "<u4").tobytes()
)
_ETH = bytes.fromhex("0200000000020200000000010800")
_CHUNK = 1 << 20
_T0 = 1_704_067_200.0  # 2024-01-01
_ACK, _SYN, _FIN, _PSH = 0x10, 0x02, 0x01, 0x08


def _ip(a: int, b: int, c: int, d: int) -> int:
    return (a << 24) | (b << 16) | (c << 8) | d


def _be(col: npt.NDArray[np.integer], width: int) -> npt.NDArray[np.uint8]:
    """Big-endian bytes of an integer column: shape (n, width)."""
    v = col.astype(np.uint64)
    shifts = np.arange(8 * (width - 1), -1, -8, dtype=np.uint64)
    return ((v[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


def _le32(col: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(col.astype("<u4")).view(np.uint8).reshape(-1, 4)


def write_records(
    fh: object,
    ts: F64,
    src: I64,
    dst: I64,
    proto: int,
    sport: I64,
    dport: I64,
    flags: I64,
    ip_len: I64,
    caplen: int,
) -> int:
    """Append pcap records (Ethernet/IPv4/TCP or UDP) for arrays of equal length to the
    open binary file ``fh``; ``caplen`` bytes of each frame are stored (header-only when
    below the frame size; the rest is zero payload). Returns the bytes written."""
    n = len(ts)
    l4 = 20 if proto == 6 else 8
    head = 14 + 20 + l4
    rec = np.zeros((n, 16 + caplen), np.uint8)
    sec = np.floor(ts)
    rec[:, 0:4] = _le32(sec.astype(np.int64))
    rec[:, 4:8] = _le32(np.round((ts - sec) * 1e6).clip(0, 999_999).astype(np.int64))
    rec[:, 8:12] = _le32(np.full(n, caplen))
    rec[:, 12:16] = _le32(ip_len + 14)
    f = 16
    rec[:, f : f + 14] = np.frombuffer(_ETH, np.uint8)
    ip = f + 14
    rec[:, ip] = 0x45
    rec[:, ip + 2 : ip + 4] = _be(ip_len, 2)
    rec[:, ip + 8] = 64
    rec[:, ip + 9] = proto
    rec[:, ip + 12 : ip + 16] = _be(src, 4)
    rec[:, ip + 16 : ip + 20] = _be(dst, 4)
    t = ip + 20
    rec[:, t : t + 2] = _be(sport, 2)
    rec[:, t + 2 : t + 4] = _be(dport, 2)
    if proto == 6:
        rec[:, t + 4 : t + 8] = _be(np.arange(n, dtype=np.int64) * 1460 % (1 << 32), 4)
        rec[:, t + 12] = 0x50
        rec[:, t + 13] = flags
        rec[:, t + 14 : t + 16] = 0xFF
    else:
        rec[:, t + 4 : t + 6] = _be(ip_len - 20, 2)
    assert caplen >= head
    data = rec.tobytes()
    fh.write(data)  # type: ignore[attr-defined]
    return len(data)


def _write(path: Path, chunks: Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]) -> int:
    size = len(_PCAP_HEADER)
    with path.open("wb") as fh:
        fh.write(_PCAP_HEADER)
        for chunk in chunks:
            size += write_records(fh, *chunk)
    return size


def write_syn_flood(path: Path, flows: int, pps: float = 100_000.0) -> int:
    """One SYN per distinct 5-tuple; returns the file size."""

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        for a in range(0, flows, _CHUNK):
            i = np.arange(a, min(flows, a + _CHUNK), dtype=np.int64)
            src = _ip(10, 77, 128, 0) + (i >> 4) % 32768
            sport = 1024 + (i & 15) + 16 * ((i >> 19) & 63)
            n = len(i)
            yield (
                _T0 + i / pps,
                src,
                np.full(n, _ip(10, 77, 0, 1)),
                6,
                sport,
                np.full(n, 80),
                np.full(n, _SYN),
                np.full(n, 40),
                54,
            )

    return _write(path, chunks())


def write_udp_scan(path: Path, flows: int, pps: float = 100_000.0) -> int:
    """One UDP datagram per distinct destination address and port."""

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        for a in range(0, flows, _CHUNK):
            i = np.arange(a, min(flows, a + _CHUNK), dtype=np.int64)
            n = len(i)
            dst = _ip(10, 77, 64, 0) + (i // 65535) % 16384
            yield (
                _T0 + i / pps,
                np.full(n, _ip(10, 77, 0, 2)),
                dst,
                17,
                np.full(n, 40000),
                1 + i % 65535,
                np.zeros(n, np.int64),
                np.full(n, 28),
                42,
            )

    return _write(path, chunks())


def write_long_flow(path: Path, packets: int, pps: float = 100_000.0) -> int:
    """One TCP flow: two server data packets (1500 bytes on the wire) per client ACK."""
    client, server = _ip(10, 77, 1, 2), _ip(10, 77, 2, 2)

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        for a in range(0, packets, _CHUNK):
            i = np.arange(a, min(packets, a + _CHUNK), dtype=np.int64)
            up = (i % 3 == 2) | (i == 0)  # the client's SYN opens the flow
            src = np.where(up, client, server)
            dst = np.where(up, server, client)
            sport = np.where(up, 50000, 443)
            dport = np.where(up, 443, 50000)
            flags = np.where(i == 0, _SYN, _ACK)
            ip_len = np.where(up, 40, 1500)
            yield (_T0 + i / pps, src, dst, 6, sport, dport, flags, ip_len, 54)

    return _write(path, chunks())


def write_sequential_flows(
    path: Path, megabytes: float, per_flow: int = 500, flow_seconds: float = 2.0
) -> tuple[int, int]:
    """Back-to-back TCP flows of full 1514-byte frames, each closed by FIN both ways,
    until the file reaches ``megabytes``; returns (file size, flows)."""
    frame_rec = 16 + 1514
    total = int(megabytes * 1e6 // frame_rec)
    flows = max(1, total // per_flow)
    client, server = _ip(10, 77, 1, 2), _ip(10, 77, 2, 2)

    def chunks() -> Iterator[tuple[F64, I64, I64, int, I64, I64, I64, I64, int]]:
        step = max(1, _CHUNK // 16 // per_flow)  # flows per chunk (~100 MB of records)
        for f0 in range(0, flows, step):
            f = np.arange(f0, min(flows, f0 + step), dtype=np.int64)
            k = np.tile(np.arange(per_flow, dtype=np.int64), len(f))
            fl = np.repeat(f, per_flow)
            up = (k % 2 == 0) | (k == per_flow - 2)
            src = np.where(up, client, server)
            dst = np.where(up, server, client)
            cport = 20000 + fl % 40000
            sport = np.where(up, cport, 443)
            dport = np.where(up, 443, cport)
            flags = np.full(len(k), _ACK | _PSH)
            flags[k == 0] = _SYN
            flags[k >= per_flow - 2] = _FIN | _ACK
            ts = _T0 + fl * (flow_seconds * 1.5) + k * (flow_seconds / per_flow)
            yield (ts, src, dst, 6, sport, dport, flags, np.full(len(k), 1500), 1514)

    return _write(path, chunks()), flows


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
    from classifier.features.flow_names import NamesPlugin
    from classifier.flows import FlowConfig, FlowTable

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
