"""What a feature group is: a named, fixed list of float columns computed from a view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from classifier.features.view import FlowView

__all__ = ["FeatureGroup", "summary", "SUMMARY_STATS"]

SUMMARY_STATS = ("min", "max", "mean", "std", "p10", "p50", "p90")


class FeatureGroup(Protocol):
    """A feature group: ``columns`` names its outputs; ``compute`` returns them in order."""

    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def compute(self, view: FlowView) -> Sequence[float]: ...


def summary(
    values: npt.NDArray[np.float64] | npt.NDArray[np.int64], stats: Sequence[str] = SUMMARY_STATS
) -> list[float]:
    """The named statistics of ``values``; every one is 0.0 for an empty array."""
    if len(values) == 0:
        return [0.0] * len(stats)
    v = values.astype(np.float64, copy=False)
    out: list[float] = []
    pct = {"p10": 10.0, "p50": 50.0, "p90": 90.0}
    wanted = [pct[s] for s in stats if s in pct]
    q = (
        dict(zip([s for s in stats if s in pct], np.percentile(v, wanted), strict=True))
        if wanted
        else {}
    )
    for s in stats:
        if s == "min":
            out.append(float(v.min()))
        elif s == "max":
            out.append(float(v.max()))
        elif s == "mean":
            out.append(float(v.mean()))
        elif s == "std":
            out.append(float(v.std()))
        elif s == "sum":
            out.append(float(v.sum()))
        else:
            out.append(float(q[s]))
    return out
