"""The spread of the session model's figures over simulation seeds."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from classifier.features.session import SessionConfig
from classifier.model.session_model import Agreement
from training.seed_spread import seed_scores, spread_markdown
from training.sessions import CANDIDATES, simulated_rows


def test_seed_scores_refit_with_each_seed_and_hold_each_source_out() -> None:
    real = simulated_rows(3, seed=7)
    real = real[real["app"].isin(["shorts", "long", "web"])].copy()
    real["source"] = np.where(real["app"] == "web", "b", "a")
    real["capture_id"] = "real-" + real["capture_id"]
    scores = seed_scores(real, CANDIDATES["logreg"], [1, 2], 3, SessionConfig(), Agreement(), 300.0)
    assert sorted(scores["seed"].unique()) == [1, 2]
    assert sorted(scores[scores["seed"] == 1]["source"]) == ["a", "all", "b"]
    text = spread_markdown(scores)
    assert text.splitlines()[2].startswith("| a | ") and "(2 seeds: 1, 2)" in text


def test_spread_shows_each_figures_range_never_and_absent() -> None:
    rows = []
    for seed, found, first in ((0, 0.25, 90.0), (1, 0.5, math.inf), (2, 0.25, 120.0)):
        rows.append(
            {
                "source": "netpkt",
                "seed": seed,
                "short_detected": found,
                "first_short_s": first,
                "long_as_short": 0.0,
                "other_as_short": 0.01,
                "short_blocked": 0.5,
                "long_blocked": float("nan"),
                "other_blocked": 0.0,
            }
        )
    line = spread_markdown(pd.DataFrame(rows)).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["netpkt", "25.0% - 50.0%", "90 - never", "0.0%", "1.0%", "50.0%", "-", "0.0%"]


def test_seeds_without_simulated_sessions_is_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "evaluate-sessions", str(tmp_path / "m.csv")]
        + ["--sim", "0", "--seeds", "3"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "shortflow: --seeds needs simulated sessions (--sim N, N > 0)"
    ]
    run = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "evaluate-sessions", "m.csv", "--seeds", "0"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "positive whole number" in run.stderr
