"""Honest evaluation: splits by capture, never by flow.

Every split here keeps all rows of a capture (all its flows and all their decision views)
on one side; :func:`check_grouped` verifies that for each split and raises
``AssertionError`` if a capture ever lands on both sides. Hyper-parameters are fixed in
``training.models``, so nothing is tuned on the folds reported here.

Prediction frames (``oof`` = out-of-fold) have the training table's meta columns plus
``pred`` (the verdict), ``p_<label>`` (class probabilities) and ``fold``. Verdicts follow
``shortflow classify``: a flow whose service is short-form as a whole (TikTok) is
short-form by its name, whatever the model says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from classifier.errors import DatasetError
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.artifact import LABELS
from classifier.model.predict import MODEL_INPUT_COLUMNS, SHORT_FORM_SERVICE
from training.metrics import SHORT, comparison_table, horizon_order, score_slices, scores
from training.models import for_prediction

__all__ = [
    "LABELS",
    "SHORT",
    "grouped_splits",
    "check_grouped",
    "predict_frame",
    "oof_predictions",
    "cross_validate",
    "lab_to_real",
    "scores",
    "score_slices",
    "comparison_table",
    "horizon_order",
    "permutation_importance_grouped",
    "importance_units",
    "EvalResult",
    "evaluate_model",
]

log = logging.getLogger(__name__)

_PROBA = [f"p_{label}" for label in LABELS]


def check_grouped(groups: Sequence[Any] | np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    """Raise ``AssertionError`` if any group (capture) has rows on both sides."""
    g = np.asarray(groups)
    both = set(g[train]) & set(g[test])
    if both:
        raise AssertionError(
            f"grouped split leaks {len(both)} capture(s) across train and "
            f"test: {sorted(map(str, both))[:3]}"
        )


def grouped_splits(
    table: pd.DataFrame, n_splits: int = 5, seed: int = 0, group: str = "capture_id"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds over whole captures (stratified by row label where possible). With fewer
    captures than ``n_splits`` this is leave-one-capture-out.

    Raises :class:`DatasetError` with fewer than two captures.
    """
    groups = table[group].to_numpy()
    n_groups = len(set(groups))
    if n_groups < 2:
        raise DatasetError(f"need at least two captures to split by capture, got {n_groups}")
    k = min(n_splits, n_groups)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits: list[tuple[np.ndarray, np.ndarray]] = []
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for train, test in splitter.split(np.zeros(len(table)), table["label"], groups):
            check_grouped(groups, train, test)
            splits.append((train, test))
    return splits


def _proba_matrix(pipeline: Any, inputs: pd.DataFrame) -> np.ndarray:
    """Class probabilities in ``LABELS`` order (zero for classes the model never saw)."""
    raw = np.asarray(pipeline.predict_proba(inputs))
    out = np.zeros((len(inputs), len(LABELS)))
    for j, cls in enumerate(pipeline.classes_):
        if str(cls) in LABELS:
            out[:, LABELS.index(str(cls))] = raw[:, j]
    return out


def predict_frame(pipeline: Any, rows: pd.DataFrame, fold: int = -1) -> pd.DataFrame:
    """Verdicts of a fitted ``pipeline`` on training-table ``rows``: meta columns +
    ``pred`` + ``p_<label>`` + ``fold``."""
    proba = _proba_matrix(pipeline, rows[list(MODEL_INPUT_COLUMNS)])
    pred = np.array(LABELS, dtype=object)[proba.argmax(axis=1)]
    if "category" in rows.columns:
        pred[(rows["category"] == SHORT_FORM_SERVICE).to_numpy()] = SHORT
    meta = [c for c in rows.columns if c not in MODEL_INPUT_COLUMNS or c == "service"]
    out = rows[meta].reset_index(drop=True).copy()
    out["pred"] = pred
    for j, col in enumerate(_PROBA):
        out[col] = proba[:, j]
    out["fold"] = fold
    return out


class _Constant:
    """Stand-in when a training fold holds a single class (a real model cannot be fit)."""

    def __init__(self, label: str) -> None:
        self.classes_ = np.array([label], dtype=object)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.ones((len(X), 1))


def _fit(factory: Callable[[], Pipeline], rows: pd.DataFrame) -> Any:
    labels = rows["label"].astype(str).to_numpy()
    if len(set(labels)) < 2:
        return _Constant(str(labels[0]))
    pipeline = factory()
    pipeline.fit(rows[list(MODEL_INPUT_COLUMNS)], labels)
    return for_prediction(pipeline)


def oof_predictions(
    table: pd.DataFrame,
    factory: Callable[[], Pipeline],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> pd.DataFrame:
    """Out-of-fold verdicts: fit on each training fold, predict its test fold."""
    groups = table["capture_id"].to_numpy()
    parts = []
    for k, (train, test) in enumerate(splits):
        check_grouped(groups, train, test)
        model = _fit(factory, table.iloc[train])
        parts.append(predict_frame(model, table.iloc[test], fold=k))
    return pd.concat(parts, ignore_index=True)


def cross_validate(
    table: pd.DataFrame,
    factories: dict[str, Callable[[], Pipeline]],
    *,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Out-of-fold verdicts of every candidate on the SAME grouped folds."""
    splits = grouped_splits(table, n_splits, seed)
    out: dict[str, pd.DataFrame] = {}
    for name, factory in factories.items():
        log.info("cross-validating %s on %d folds", name, len(splits))
        out[name] = oof_predictions(table, factory, splits)
    return out


def lab_to_real(table: pd.DataFrame, factory: Callable[[], Pipeline]) -> pd.DataFrame | None:
    """Train on every lab capture, test on every real one; ``None`` when either side is
    missing or the lab side has a single class."""
    lab = np.flatnonzero((table["source"] == "lab").to_numpy())
    real = np.flatnonzero((table["source"] == "real").to_numpy())
    if len(lab) == 0 or len(real) == 0 or table.iloc[lab]["label"].nunique() < 2:
        return None
    check_grouped(table["capture_id"].to_numpy(), lab, real)
    model = _fit(factory, table.iloc[lab])
    return predict_frame(model, table.iloc[real], fold=0)


def importance_units() -> dict[str, list[str]]:
    """Units of permutation: each non-SPLT feature alone, the SPLT sizes and the SPLT
    inter-arrival times as two blocks, and the service."""
    units: dict[str, list[str]] = {}
    for col in FEATURE_COLUMNS:
        if col.startswith("splt_size_"):
            units.setdefault("splt_size_* (block)", []).append(col)
        elif col.startswith("splt_iat_"):
            units.setdefault("splt_iat_* (block)", []).append(col)
        else:
            units[col] = [col]
    units["service"] = ["service"]
    return units


def permutation_importance_grouped(
    table: pd.DataFrame,
    factory: Callable[[], Pipeline],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    n_repeats: int = 2,
    max_rows: int = 1500,
    seed: int = 0,
    units: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """Permutation importance on HELD-OUT folds only: fit on each training fold, then the
    drop of macro-F1 (over the labels present in the fold) on its test fold when a unit's
    columns are shuffled together.
    Returns ``unit, importance_mean, importance_std`` sorted by importance."""
    units = units or importance_units()
    rng = np.random.default_rng(seed)
    groups = table["capture_id"].to_numpy()
    drops: dict[str, list[float]] = {u: [] for u in units}
    for train, test in splits:
        check_grouped(groups, train, test)
        model = _fit(factory, table.iloc[train])
        rows = table.iloc[test]
        if len(rows) > max_rows:
            rows = rows.iloc[np.sort(rng.choice(len(rows), max_rows, replace=False))]
        inputs = rows[list(MODEL_INPUT_COLUMNS)].reset_index(drop=True)
        y = rows["label"].astype(str).to_numpy()
        base = _macro(model, inputs, y)
        for unit, cols in units.items():
            for _ in range(n_repeats):
                shuffled = inputs.copy()
                order = rng.permutation(len(inputs))
                for col in cols:
                    shuffled[col] = inputs[col].to_numpy()[order]
                drops[unit].append(base - _macro(model, shuffled, y))
    out = pd.DataFrame(
        {
            "unit": list(drops),
            "importance_mean": [float(np.mean(v)) if v else 0.0 for v in drops.values()],
            "importance_std": [float(np.std(v)) if v else 0.0 for v in drops.values()],
        }
    )
    return out.sort_values("importance_mean", ascending=False, kind="stable").reset_index(drop=True)


def _macro(model: Any, inputs: pd.DataFrame, y: np.ndarray) -> float:
    """Macro-F1 over the labels present in the fold's truth: a class that is absent from
    the fold but appears among shuffled verdicts would otherwise drop the score by a whole
    class share, which measures the fold's make-up rather than the feature."""
    proba = _proba_matrix(model, inputs)
    pred = np.array(LABELS, dtype=object)[proba.argmax(axis=1)]
    present = sorted(set(y))
    return float(f1_score(y, pred.astype(str), labels=present, average="macro", zero_division=0))


@dataclass
class EvalResult:
    """What :func:`evaluate_model` computed (all figures name their data)."""

    report: Path
    heldout: pd.DataFrame | None
    cv: pd.DataFrame
    importance: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    seen_captures: int = 0
    lab_to_real: pd.DataFrame | None = None


def evaluate_model(
    model_dir: Path | str | None,
    manifests: Sequence[Path | str],
    out_dir: Path,
    *,
    jobs: int = 1,
    scheduler: str = "local",
    cache_dir: Path | None = None,
    n_splits: int = 5,
    seed: int = 0,
    importance_repeats: int = 2,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a saved model on the captures of ``manifests`` and write ``report.md`` +
    PNG figures into ``out_dir``.

    Evaluations: (1) the saved model as it is, on the captures it was NOT trained on
    (captures in its training set are left out and counted); (2) grouped cross-validation
    of the same pipeline recipe (unfitted clone) on all given captures; (3) when both lab
    and real captures are given, the recipe trained on all lab captures and tested on all
    real ones.

    Raises :class:`classifier.errors.ModelError` for a bad model directory and
    :class:`DatasetError` for bad manifests or too few captures.
    """
    from classifier.features.featurize import FeaturizeConfig
    from classifier.flows import FlowConfig
    from classifier.model.artifact import load_model
    from training.dataset import expand_views, flow_table
    from training.report import write_evaluation_report

    model = load_model(model_dir)
    fz = model.info.metrics.get("featurize", {})
    snapshots = tuple(float(h) for h in model.info.decision_windows if h is not None)
    config = FeaturizeConfig(
        flow=FlowConfig(resegment_mss=fz.get("resegment_mss")), snapshots=snapshots or (3.0, 10.0)
    )
    flows = flow_table(
        manifests, config, jobs=jobs, scheduler=scheduler, cache_dir=cache_dir, progress=progress
    )
    table = expand_views(flows, [None, *config.snapshots])
    seen = set(model.info.metrics.get("training_captures", []))
    unseen = table[~table["capture_id"].isin(seen)]
    heldout = predict_frame(model.pipeline, unseen) if len(unseen) else None
    recipe = model.pipeline

    def factory() -> Pipeline:
        return clone(recipe)

    splits = grouped_splits(table, n_splits, seed)
    cv = oof_predictions(table, factory, splits)
    importance = permutation_importance_grouped(
        table, factory, splits, n_repeats=importance_repeats, seed=seed
    )
    n_seen = int(table.loc[table["capture_id"].isin(seen), "capture_id"].nunique())
    transfer = lab_to_real(table, factory)
    report, figures = write_evaluation_report(
        out_dir,
        model_name=model.info.name,
        model_info=model.info.to_json(),
        manifests=[str(m) for m in manifests],
        heldout=heldout,
        cv=cv,
        importance=importance,
        seen_captures=n_seen,
        n_folds=len(splits),
        lab_to_real=transfer,
    )
    return EvalResult(
        report=report,
        heldout=heldout,
        cv=cv,
        importance=importance,
        figures=figures,
        seen_captures=n_seen,
        lab_to_real=transfer,
    )
