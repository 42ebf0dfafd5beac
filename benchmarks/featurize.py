"""Featurize speed in one process: reference vs fast vs a plain dpkt loop, same file, same run.

Usage::

    python benchmarks/featurize.py [CAPTURE] [--windows SECONDS] [--repeat N]
                                   [--ref-packets N]

Without CAPTURE the largest shared capture is used. The fast path is called once before
timing (loads its compiled code from numba's cache, or compiles it on a first run). The
reference runs on the first ``--ref-packets`` records only (a copy made with editcap) when
the capture is larger, and its rate is taken there. The dpkt loop walks records and decodes
Ethernet/IP/TCP/UDP with dpkt, nothing more: a floor for "Python touches every packet".
Figures are best of ``--repeat`` runs, in packets (records) per second; the machine is
shared, so compare the ratios printed from the same run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dpkt

from classifier.features.featurize import FeaturizeConfig, FeaturizeStats, featurize
from classifier.features.featurize_fast import featurize_fast
from training.shared_captures import shared_captures_dir

SHARED = shared_captures_dir()


def _largest() -> Path:
    found = [p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng")]
    if not found:
        sys.exit(f"no capture under {SHARED}; pass one")
    return max(found, key=lambda p: p.stat().st_size)


def _dpkt_loop(path: Path) -> int:
    """Records + dpkt Ethernet/IP decode; returns records seen."""
    n = 0
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        for _ts, buf in reader:
            n += 1
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                _ = ip.data
    return n


def _records(
    run: Callable[[Path, FeaturizeConfig, FeaturizeStats], object],
) -> Callable[[Path, FeaturizeConfig], int]:
    def go(path: Path, config: FeaturizeConfig) -> int:
        stats = FeaturizeStats()
        run(path, config, stats)
        return stats.read.records

    return go


_fast = _records(lambda p, c, s: featurize_fast(p, c, stats=s))
_reference = _records(lambda p, c, s: featurize(p, c, stats=s))


def _subset(path: Path, packets: int, tmp: Path) -> Path:
    """The first ``packets`` records of ``path`` (editcap), or ``path`` if unavailable."""
    editcap = shutil.which("editcap")
    if editcap is None:
        return path
    out = tmp / f"first{packets}{path.suffix}"
    subprocess.run(
        [editcap, "-r", str(path), str(out), f"1-{packets}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def _best(fn: Callable[[], int], repeat: int) -> tuple[int, float]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return count, best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("capture", nargs="?", type=Path)
    parser.add_argument(
        "--windows",
        type=float,
        default=None,
        help="one row per flow and window of this many seconds",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--ref-packets",
        type=int,
        default=200_000,
        help="run the reference on at most this many records",
    )
    args = parser.parse_args()
    path: Path = args.capture or _largest()
    config = FeaturizeConfig(window=args.windows)
    featurize_fast(path, config)  # load (or compile) the compiled code once
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        fast_n, fast_s = _best(lambda: _fast(path, config), args.repeat)
        ref_path = (
            path if fast_n <= args.ref_packets else _subset(path, args.ref_packets, Path(tmp))
        )
        ref_n, ref_s = _best(lambda: _reference(ref_path, config), max(1, args.repeat - 1))
        dpkt_n, dpkt_s = _best(lambda: _dpkt_loop(path), args.repeat)
    mode = f"windows of {args.windows:g} s" if args.windows else "snapshots at 3 s and 10 s"
    print(f"capture: {path} ({path.stat().st_size} bytes, {fast_n} records), {mode}")
    rates = {"fast": fast_n / fast_s, "reference": ref_n / ref_s, "dpkt loop": dpkt_n / dpkt_s}
    runs = {"fast": (fast_n, fast_s), "reference": (ref_n, ref_s), "dpkt loop": (dpkt_n, dpkt_s)}
    for name, (n, s) in runs.items():
        note = " (first records only)" if name == "reference" and ref_path != path else ""
        print(f"{name:10s} {n:9d} records {s:8.3f} s {rates[name]:12.0f} rec/s{note}")
    print(f"ratio fast / reference: {rates['fast'] / rates['reference']:.1f}x")
    print(f"ratio fast / dpkt loop: {rates['fast'] / rates['dpkt loop']:.1f}x")


if __name__ == "__main__":
    main()
