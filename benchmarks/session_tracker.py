"""What the live session view costs per packet: the flow table alone vs the flow table with
the session tracker (``classifier.live.sessions``), judging every 10 s of capture time.

Usage: ``python benchmarks/session_tracker.py [CAPTURE] [--repeat N]``. Without CAPTURE the
bundled sample is used. Packets are decoded once up front, then fed to a fresh featurizer
per run, alternately with and without the tracker; the best of N runs of each is printed,
with the ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifier.capture.packet import Packet  # noqa: E402
from classifier.capture.reader import open_capture  # noqa: E402
from classifier.features.featurize import FeaturizeConfig, Featurizer  # noqa: E402
from classifier.features.session import SessionConfig  # noqa: E402
from classifier.live.sessions import SessionTracker  # noqa: E402

SAMPLE = ROOT / "datasets" / "samples" / "sample.pcap"


def _run(packets: list[Packet], with_tracker: bool) -> tuple[float, float, int, int]:
    """Seconds spent adding packets, seconds spent judging, judgements, windows judged."""
    holder: dict[str, Featurizer] = {}
    plugins: list[SessionTracker] = []
    tracker = None
    if with_tracker:
        tracker = SessionTracker(SessionConfig(), lambda flow: holder["f"].flow_meta(flow))
        plugins.append(tracker)
    holder["f"] = Featurizer(FeaturizeConfig(snapshots=()), capture="bench", plugins=plugins)
    table = holder["f"].table
    judging, judgements, windows = 0.0, 0, 0
    start = time.perf_counter()
    for pkt in packets:
        table.add(pkt)
        if tracker is not None and tracker.due(pkt.ts):
            t = time.perf_counter()
            windows += len(tracker.windows(pkt.ts))
            judging += time.perf_counter() - t
            judgements += 1
    return time.perf_counter() - start - judging, judging, judgements, windows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", type=Path, default=SAMPLE)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    packets = list(open_capture(args.capture))
    if not packets:
        print(f"{args.capture}: no TCP/UDP packets", file=sys.stderr)
        return 2
    best = {False: math.inf, True: math.inf}
    judge_best, judgements, windows = math.inf, 0, 0
    for _ in range(args.repeat):
        for with_tracker in (False, True):
            adding, judging, judgements, windows = _run(packets, with_tracker)
            best[with_tracker] = min(best[with_tracker], adding)
            if with_tracker:
                judge_best = min(judge_best, judging)
    per = {k: v / len(packets) * 1e6 for k, v in best.items()}
    span = packets[-1].ts - packets[0].ts
    print(
        f"{args.capture.name}: {len(packets)} packets over {span:.0f} s; {judgements} "
        f"judgements, {windows} session windows"
    )
    print(f"adding packets, flow table alone:   {per[False]:.2f} us/packet")
    print(
        f"adding packets, with the tracker:   {per[True]:.2f} us/packet "
        f"(x{best[True] / best[False]:.2f})"
    )
    print(
        f"judging (every 10 s of capture time): "
        f"{judge_best / max(judgements, 1) * 1e3:.1f} ms per judgement"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
