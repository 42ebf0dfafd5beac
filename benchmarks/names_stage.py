"""The fast path's names stage with and without the compiled ClientHello scanner.

Usage::

    python -m benchmarks.names_stage CAPTURE [--repeat N]

Runs :func:`featurize_fast` on ``CAPTURE`` alternately with the scanner off (every name
packet goes to the reference's Python extractor, as before the scanner existed) and on,
``--repeat`` times each, in one process after one warm-up call (compiled code loaded).
Prints, per run, the CPU seconds of the whole call and of the names stage
(``NameStage.add``: hello scan, Python extractors, DNS answers, name-cache lookups), then
the best of each mode and their ratios. CPU seconds (``time.process_time``) are steadier
than wall time on a shared machine; compare modes within one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from classifier.features import featurize_fast as fast
from classifier.names import plugin_fast

_MODES = {"off": False, "on": True}


def _timed_names(acc: list[float]) -> Callable[..., Any]:
    inner = plugin_fast.NameStage.add

    def names(self: Any, *args: Any) -> Any:
        t0 = time.process_time()
        try:
            return inner(self, *args)
        finally:
            acc[0] += time.process_time() - t0

    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("capture", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    acc = [0.0]
    plugin_fast.NameStage.add = _timed_names(acc)  # type: ignore[method-assign]
    fast.featurize_fast(args.capture)  # load (or compile) the compiled code once
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for mode, scan in _MODES.items():
            plugin_fast._SCAN_HELLOS = scan
            acc[0] = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            rows = len(fast.featurize_fast(args.capture))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"scanner {mode:3s}: {rows} rows, wall {wall:6.2f} s, cpu {cpu:6.2f} s, "
                f"names stage cpu {acc[0]:6.2f} s",
                flush=True,
            )
            old = best.get(mode, (float("inf"), float("inf")))
            best[mode] = (min(old[0], cpu), min(old[1], acc[0]))
    (cpu_off, names_off), (cpu_on, names_on) = best["off"], best["on"]
    print(
        f"best cpu s: whole call {cpu_off:.2f} -> {cpu_on:.2f} ({cpu_off / cpu_on:.1f}x), "
        f"names stage {names_off:.2f} -> {names_on:.2f} ({names_off / names_on:.1f}x)"
    )


if __name__ == "__main__":
    main()
