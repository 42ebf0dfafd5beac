"""In-process probe of live mode's memory per held flow.

Builds a real LiveRouter on interface ``lo`` (root: it sets up nftables and a capture)
with a fake clock and feeds it N one-datagram UDP flows per 20 s round, four rounds; prints
the RSS when idle and after each round. A second argument turns tracemalloc on and prints
its top lines (slow: use 5,000-10,000 flows)::

    python -m benchmarks.live_memory_probe 20000
    python -m benchmarks.live_memory_probe 10000 trace
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from classifier.capture.packet import Packet
from classifier.live.router import LiveConfig, LiveRouter

_ROUND = 20.0
_STEP = 0.2
_BATCH = 2000


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rss_mib() -> float:
    """This process's resident set size, MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _packet(t: float, i: int) -> Packet:
    # one client port, 50,000 server ports per client address: every i is its own flow
    client, port = ("10.77.1.2", 10000 + i) if i < 50000 else ("10.77.1.3", i - 40000)
    return Packet(t, 74, 60, 4, client, "10.77.2.2", 17, 40000, port, 0, 0, 32, b"x" * 32)


def main(argv: list[str]) -> int:
    n = int(argv[0])
    trace = len(argv) > 1
    clock = _Clock(1_700_000_000.0)
    with tempfile.TemporaryDirectory() as tmp:
        router = LiveRouter(
            LiveConfig(ifaces=("lo",), summary_every=0, audit_log=Path(tmp) / "audit.jsonl"),
            clock=clock,
        )
        try:
            idle = rss_mib()
            print(f"idle rss {idle:.1f} MiB", flush=True)
            if trace:
                tracemalloc.start(3)
            t0 = time.time()
            for rnd in range(4):
                for first in range(0, n, _BATCH):
                    router.process(
                        [_packet(clock.t, i) for i in range(first, min(n, first + _BATCH))]
                    )
                    clock.t += _STEP
                for _ in range(int(_ROUND / _STEP) - n // _BATCH):
                    router.process([])
                    clock.t += _STEP
                rss = rss_mib()
                print(
                    f"round {rnd} rss {rss:.1f} MiB flows {router.state.flow_count()} "
                    f"above idle {(rss - idle) * 2**20 / max(n, 1):.0f} B/flow "
                    f"t {time.time() - t0:.1f} s",
                    flush=True,
                )
            if trace:
                snap = tracemalloc.take_snapshot()
                for stat in snap.statistics("lineno")[:25]:
                    print(stat)
                total = sum(s.size for s in snap.statistics("filename"))
                print(f"traced {total / 2**20:.1f} MiB, {total / max(n, 1):.0f} B/flow")
        finally:
            router.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
