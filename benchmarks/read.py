"""Read speed: ``open_capture`` (record walk + full decode) vs a bare ``dpkt.pcap.Reader`` loop.

Usage: ``python benchmarks/read.py [CAPTURE] [--repeat N]``. Without CAPTURE, the largest
pcap under the shared captures (``$SHORTFLOW_TEST_DATA`` or ``../shared/pcaps``, see
:mod:`training.shared_captures`) is used. Both loops run in the same process, alternately,
and the best of N runs of each is reported. The dpkt loop only walks records (no decode),
so the ratio shows what decoding every frame into a Packet costs on top of that.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dpkt

from classifier.capture import ReadStats, open_capture
from training.shared_captures import shared_captures_dir

SHARED = shared_captures_dir()


def _largest() -> Path:
    candidates = [p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng")]
    if not candidates:
        sys.exit(f"no capture found under {SHARED}; pass one")
    return max(candidates, key=lambda p: p.stat().st_size)


def _dpkt_loop(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        reader = dpkt.pcapng.Reader(f) if f.read(4) == b"\x0a\x0d\x0d\x0a" else None
        if reader is None:
            f.seek(0)
            reader = dpkt.pcap.Reader(f)
        for _ts, _buf in reader:
            n += 1
    return n


def _dpkt_decode(path: Path) -> int:
    """dpkt records + dpkt Ethernet/IP/TCP/UDP decode (Ethernet captures only)."""
    n = 0
    with path.open("rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                n += 1
    return n


def _ours(path: Path) -> int:
    stats = ReadStats()
    for _ in open_capture(path, stats=stats):
        pass
    return stats.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("capture", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    path: Path = args.capture or _largest()
    runs = [("dpkt.pcap.Reader (records only)", _dpkt_loop), ("open_capture (decoded)", _ours)]
    if path.read_bytes()[:4] != b"\x0a\x0d\x0d\x0a":
        runs.append(("dpkt.pcap.Reader + dpkt decode", _dpkt_decode))
    best = {name: float("inf") for name, _ in runs}
    counts: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, fn in runs:
            t0 = time.perf_counter()
            counts[name] = fn(path)
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"capture: {path} ({path.stat().st_size} bytes)")
    rates = {}
    for name, seconds in best.items():
        rates[name] = counts[name] / seconds
        print(f"{name:34s} {counts[name]:8d} records  {seconds:7.3f} s  {rates[name]:10.0f} rec/s")
    ours, base = rates["open_capture (decoded)"], rates["dpkt.pcap.Reader (records only)"]
    print(f"ratio open_capture / dpkt.pcap.Reader: {ours / base:.2f}")


if __name__ == "__main__":
    main()
