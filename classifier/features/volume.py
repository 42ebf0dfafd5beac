"""Volume, packet size and inter-arrival feature groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifier.features.group import SUMMARY_STATS, summary
from classifier.features.view import FlowView

__all__ = ["Volume", "Sizes", "InterArrival", "Throughput", "TcpFlags"]

_DIRS = (("up", 1), ("down", -1))
_HORIZONS = (1.0, 3.0, 10.0)
_FLAG_BITS = (
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
)


class Volume:
    """Duration, packets, bytes and payload bytes per direction, and rates."""

    name = "volume"
    columns = (
        "duration",
        "pkts_up",
        "pkts_down",
        "bytes_up",
        "bytes_down",
        "payload_up",
        "payload_down",
        "down_up_byte_ratio",
        "pkts_per_s",
        "bytes_per_s",
    )

    def compute(self, view: FlowView) -> Sequence[float]:
        up = view.direction == 1
        down = ~up
        bytes_up = float(view.size[up].sum())
        bytes_down = float(view.size[down].sum())
        duration = view.span
        rate_base = max(duration, 1e-3)
        return [
            duration,
            float(up.sum()),
            float(down.sum()),
            bytes_up,
            bytes_down,
            float(view.payload[up].sum()),
            float(view.payload[down].sum()),
            bytes_down / max(bytes_up, 1.0),
            len(view) / rate_base,
            (bytes_up + bytes_down) / rate_base,
        ]


class Sizes:
    """IP packet size statistics per direction."""

    name = "sizes"
    columns = tuple(f"size_{d}_{s}" for d, _ in _DIRS for s in SUMMARY_STATS)

    def compute(self, view: FlowView) -> Sequence[float]:
        out: list[float] = []
        for _, sign in _DIRS:
            out += summary(view.size[view.direction == sign])
        return out


_IAT_STATS = ("min", "max", "mean", "std", "p50", "p90")


class InterArrival:
    """Inter-arrival time statistics per direction and over both directions."""

    name = "iat"
    columns = tuple(f"iat_{d}_{s}" for d in ("up", "down", "all") for s in _IAT_STATS)

    def compute(self, view: FlowView) -> Sequence[float]:
        out: list[float] = []
        for _, sign in _DIRS:
            out += summary(np.diff(view.t[view.direction == sign]), _IAT_STATS)
        out += summary(np.diff(view.t), _IAT_STATS)
        return out


class Throughput:
    """Bytes per direction within the first 1, 3 and 10 seconds of the view."""

    name = "throughput"
    horizons = _HORIZONS
    columns = tuple(f"{d}_bytes_first_{int(h)}s" for d, _ in _DIRS for h in _HORIZONS)

    def compute(self, view: FlowView) -> Sequence[float]:
        out: list[float] = []
        for _, sign in _DIRS:
            mine = view.direction == sign
            for h in self.horizons:
                out.append(float(view.size[mine & (view.t < h)].sum()))
        return out


class TcpFlags:
    """How many packets carried each TCP flag."""

    name = "tcp_flags"
    _bits = _FLAG_BITS
    columns = tuple(f"flag_{n}" for n, _ in _FLAG_BITS)

    def compute(self, view: FlowView) -> Sequence[float]:
        return [float(np.count_nonzero(view.flags & bit)) for _, bit in self._bits]
