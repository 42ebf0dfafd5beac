"""Evaluation: scores, comparison, importance on held-out folds, and the written report."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifier.errors import ModelError
from tests.training.test_train import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(training manifest, manifest with unseen captures)."""
    root = tmp_path_factory.mktemp("eval")
    return make_dataset(root / "train", per_kind=3), make_dataset(
        root / "new", per_kind=2, seed0=100
    )


@pytest.fixture(scope="module")
def model_dir(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.train import train

    out = tmp_path_factory.mktemp("eval-model") / "m"
    train([data[0]], out, candidates=["names", "rf"], n_splits=3, seed=1)
    return out


def _preds(label: list[str], pred: list[str], session: list[str]) -> pd.DataFrame:
    n = len(label)
    return pd.DataFrame(
        {
            "label": label,
            "pred": pred,
            "session_label": session,
            "capture_id": [f"c{i}" for i in range(n)],
            "source": ["real"] * n,
            "horizon": ["flow"] * n,
        }
    )


def test_scores_and_false_block_rates() -> None:
    from training.evaluate import scores

    p = _preds(
        ["long-form", "long-form", "long-form", "long-form", "other", "short-form"],
        ["short-form", "long-form", "long-form", "long-form", "short-form", "short-form"],
        ["long-form"] * 4 + ["call", "short-form"],
    )
    s = scores(p)
    assert s["false_block_long"] == pytest.approx(0.25)
    assert s["false_block_call"] == pytest.approx(1.0)
    assert s["per_class"]["short-form"]["precision"] == pytest.approx(1 / 3)
    assert s["per_class"]["short-form"]["recall"] == pytest.approx(1.0)
    assert s["confusion"][0] == [1, 0, 0]  # truth short-form -> verdict short-form
    assert s["accuracy"] == pytest.approx(4 / 6)
    none = scores(_preds(["other"], ["other"], ["web"]))
    assert math.isnan(none["false_block_long"]) and math.isnan(none["false_block_call"])


def test_choose_breaks_ties_on_false_blocks() -> None:
    from training.train import choose

    comp = pd.DataFrame(
        [
            {
                "candidate": "a",
                "evaluation": "grouped CV",
                "source": "all",
                "macro_f1": 0.9001,
                "false_block_long": 0.2,
                "false_block_call": 0.0,
            },
            {
                "candidate": "b",
                "evaluation": "grouped CV",
                "source": "all",
                "macro_f1": 0.9003,
                "false_block_long": 0.1,
                "false_block_call": 0.0,
            },
            {
                "candidate": "c",
                "evaluation": "grouped CV",
                "source": "all",
                "macro_f1": 0.85,
                "false_block_long": 0.0,
                "false_block_call": 0.0,
            },
            {
                "candidate": "c",
                "evaluation": "grouped CV",
                "source": "lab",
                "macro_f1": 0.99,
                "false_block_long": 0.0,
                "false_block_call": 0.0,
            },
        ]
    )
    assert choose(comp, ["a", "b", "c"]) == "b"


def test_permutation_importance_on_heldout_folds(data: tuple[Path, Path]) -> None:
    from functools import partial

    from training.dataset import build_table
    from training.evaluate import grouped_splits, permutation_importance_grouped
    from training.models import make_candidate

    table = build_table([data[0]])
    splits = grouped_splits(table, n_splits=3)
    units = {
        "duration": ["duration"],
        "burst_count": ["burst_count"],
        "service": ["service"],
        "flag_urg": ["flag_urg"],
    }
    imp = permutation_importance_grouped(
        table, partial(make_candidate, "rf", 0), splits, n_repeats=2, units=units
    )
    assert list(imp.columns) == ["unit", "importance_mean", "importance_std"]
    assert set(imp["unit"]) == set(units)
    by = imp.set_index("unit")["importance_mean"]
    assert by["flag_urg"] == 0.0 and by["service"] == 0.0  # constant in this data
    assert imp["importance_mean"].is_monotonic_decreasing


def test_evaluate_writes_report(model_dir: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    from training.evaluate import evaluate_model

    out = tmp_path / "report"
    result = evaluate_model(model_dir, [data[0], data[1]], out, n_splits=3, importance_repeats=1)
    text = (out / "report.md").read_text()
    for name in (
        "heldout_confusion.png",
        "heldout_pr_curves.png",
        "heldout_accuracy_vs_time.png",
        "cv_confusion.png",
        "cv_pr_curves.png",
        "cv_accuracy_vs_time.png",
        "lab2real_confusion.png",
        "lab2real_accuracy_vs_time.png",
        "feature_importance.png",
    ):
        png = out / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name})" in text
    assert result.seen_captures == 9  # the training captures are left out of "held-out"
    assert result.heldout is not None
    assert result.heldout["capture_id"].nunique() == 6
    assert "ONE Instagram Reels trace session" in text
    assert "data: the saved model on captures it was not trained on" in text
    assert "trained on all lab captures, tested on all real captures" in text
    assert result.lab_to_real is not None
    assert set(result.lab_to_real["source"]) == {"real"}
    assert "| rf | grouped CV | all |" in text  # comparison from model.json
    # held-out verdicts are real: the easy synthetic shapes are mostly right
    assert np.mean(result.heldout["label"] == result.heldout["pred"]) > 0.8


def test_evaluate_only_seen_captures_says_so(
    model_dir: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    from training.train_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "r"
    args = parser.parse_args(
        [
            "evaluate",
            str(model_dir),
            str(data[0]),
            "-o",
            str(out),
            "--folds",
            "3",
            "--importance-repeats",
            "1",
            "-q",
            "--no-cache",
        ]
    )
    assert args.handler(args) == 0
    text = (out / "report.md").read_text()
    assert "all 9 captures of these manifests were in the model's training set" in text
    assert not (out / "heldout_confusion.png").exists()
    assert (out / "cv_confusion.png").is_file()


def test_evaluate_bad_model_dir(data: tuple[Path, Path], tmp_path: Path) -> None:
    from training.evaluate import evaluate_model

    with pytest.raises(ModelError):
        evaluate_model(tmp_path / "nope", [data[0]], tmp_path / "r")
