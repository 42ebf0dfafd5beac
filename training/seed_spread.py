"""How far the session model's leave-one-source-out figures move with the simulation seed.

The simulated sessions are drawn from ranges, so another seed trains on other sessions;
where the real windows sit near the policy's threshold, a small shift of the fitted model
moves whole windows across it. :func:`seed_scores` refits with each seed and
:func:`spread_markdown` prints each figure's range over the seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from classifier.features.session import SessionConfig
from classifier.model.session_model import Agreement
from training.sessions import leave_one_source_out, simulated_rows, source_scores

__all__ = ["seed_scores", "spread_markdown"]

_FIGURES = (
    ("short_detected", "short-form time detected", True),
    ("first_short_s", "first short-form verdict (s)", False),
    ("long_as_short", "long-form time called short", True),
    ("other_as_short", "other time called short", True),
    ("short_blocked", "short-form time under a block", True),
    ("long_blocked", "long-form time under a block", True),
    ("other_blocked", "other time under a block", True),
)


def seed_scores(
    real: pd.DataFrame,
    factory: Callable[[], Any],
    seeds: Sequence[int],
    sessions_per_kind: int,
    config: SessionConfig,
    rule: Agreement,
    block_seconds: float,
) -> pd.DataFrame:
    """:func:`training.sessions.source_scores` of each seed (column ``seed``): the real
    rows plus ``sessions_per_kind`` simulated sessions of each kind drawn with that seed,
    each real source held out in turn."""
    parts = []
    for seed in seeds:
        table = pd.concat(
            [real, simulated_rows(sessions_per_kind, seed, config)], ignore_index=True
        )
        preds = leave_one_source_out(table, factory, rule=rule)
        parts.append(source_scores(preds, block_seconds=block_seconds).assign(seed=seed))
    return pd.concat(parts, ignore_index=True)


def _value(v: float, pct: bool) -> str:
    if math.isinf(v):
        return "never"
    return f"{v:.1%}" if pct else f"{v:.0f}"


def _range(values: pd.Series, pct: bool) -> str:
    """``lo-hi`` of ``values`` (one value when they agree; ``-`` when the class is
    absent)."""
    known = values.dropna()
    if known.empty:
        return "-"
    lo, hi = _value(float(known.min()), pct), _value(float(known.max()), pct)
    return lo if lo == hi else f"{lo} - {hi}"


def spread_markdown(scores: pd.DataFrame) -> str:
    """:func:`seed_scores` as a Markdown table: per held-out source, each figure's lowest
    and highest value over the seeds."""
    seeds = sorted(scores["seed"].unique())
    header = "| held-out source | " + " | ".join(name for _, name, _ in _FIGURES) + " |"
    lines = [header, "|" + "---|" * (len(_FIGURES) + 1)]
    for source, part in scores.groupby("source", sort=False):
        cells = [_range(part[column], pct) for column, _, pct in _FIGURES]
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"({len(seeds)} seeds: " + ", ".join(str(s) for s in seeds) + ")")
    return "\n".join(lines)
