"""Download bursts: runs of server->client data separated by idle gaps.

Burst sizes are counted in transport payload bytes, so they do not change when a capture
was taken with segmentation offload (GRO/TSO) and shows a few huge "packets" instead of many
MTU-sized ones: the same bytes arrive at nearly the same times either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifier.features.group import summary
from classifier.features.view import FlowView

__all__ = ["Bursts"]


class Bursts:
    """Segment-fetch shape: how many bursts, how big, how long, how far apart, and the
    upstream request bytes sent in the gap before each burst."""

    name = "bursts"
    columns = (
        "burst_count",
        "bursts_per_s",
        "burst_bytes_min",
        "burst_bytes_max",
        "burst_bytes_mean",
        "burst_bytes_std",
        "burst_bytes_p50",
        "burst_bytes_cv",
        "burst_dur_mean",
        "burst_dur_max",
        "burst_dur_p50",
        "burst_gap_mean",
        "burst_gap_std",
        "burst_gap_max",
        "burst_gap_p50",
        "req_bytes_mean",
        "req_bytes_max",
        "req_bytes_p50",
        "req_count",
        "first_burst_bytes",
        "first_burst_dur",
        "idle_frac",
    )

    def __init__(self, gap: float = 0.5) -> None:
        self.gap = gap

    def compute(self, view: FlowView) -> Sequence[float]:
        down = (view.direction == -1) & (view.payload > 0)
        t = view.t[down]
        if len(t) == 0:
            return [0.0] * len(self.columns)
        payload = view.payload[down]
        breaks = np.flatnonzero(np.diff(t) > self.gap) + 1
        starts_idx = np.concatenate(([0], breaks))
        ends_idx = np.concatenate((breaks, [len(t)])) - 1
        start_t = t[starts_idx]
        end_t = t[ends_idx]
        sizes = np.add.reduceat(payload, starts_idx).astype(np.float64)
        durations = end_t - start_t
        gaps = start_t[1:] - end_t[:-1]
        up = (view.direction == 1) & (view.payload > 0)
        up_t, up_bytes = view.t[up], view.payload[up]
        prev_end = np.concatenate(([-np.inf], end_t[:-1]))
        # upstream payload sent after the previous burst ended, up to this burst's start
        cum = np.concatenate(([0], np.cumsum(up_bytes)))
        requests = (
            cum[np.searchsorted(up_t, start_t, side="right")]
            - cum[np.searchsorted(up_t, prev_end, side="right")]
        ).astype(np.float64)
        n = len(sizes)
        mean = float(sizes.mean())
        span = max(view.span, 1e-3)
        return [
            float(n),
            n / span,
            *summary(sizes, ("min", "max", "mean", "std", "p50")),
            float(sizes.std()) / mean if mean > 0 else 0.0,
            *summary(durations, ("mean", "max", "p50")),
            *summary(gaps, ("mean", "std", "max", "p50")),
            *summary(requests, ("mean", "max", "p50")),
            float(np.count_nonzero(requests)),
            float(sizes[0]),
            float(durations[0]),
            float(gaps.sum()) / span,
        ]
