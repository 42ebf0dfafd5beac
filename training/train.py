"""Train: compare candidates on the same grouped folds, keep the best, refit, save.

Selection rule: highest macro-F1 of grouped cross-validation (all decision views pooled,
all data), rounded to 3 decimals; ties go to the lower long-form false-block rate, then the
lower call false-block rate, then the order the candidates were given in. The chosen
pipeline is refit on all rows and saved with :func:`classifier.model.artifact.save_model`;
``model.json`` carries the comparison table, the training captures and the manifest hash.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from classifier.errors import DatasetError
from classifier.features.featurize import FeaturizeConfig
from classifier.model.artifact import LABELS, ModelInfo, save_model
from classifier.model.predict import MODEL_INPUT_COLUMNS
from training.dataset import build_table
from training.evaluate import comparison_table, cross_validate, lab_to_real, score_slices
from training.models import describe, for_prediction, make_candidate

__all__ = ["DEFAULT_CANDIDATES", "train", "train_table", "choose", "fit_final", "TrainOutcome"]

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = ("names", "rf", "hgb", "lgbm")


class TrainOutcome:
    """What :func:`train_table` produced: the refit pipeline, the chosen candidate, the
    comparison table and the out-of-fold verdicts of every candidate."""

    def __init__(
        self,
        pipeline: Pipeline,
        chosen: str,
        comparison: pd.DataFrame,
        oof: dict[str, pd.DataFrame],
    ) -> None:
        self.pipeline = pipeline
        self.chosen = chosen
        self.comparison = comparison
        self.oof = oof


def choose(comparison: pd.DataFrame, order: Sequence[str]) -> str:
    """The best candidate by the selection rule (see module docstring). Raises
    :class:`DatasetError` when the comparison is empty."""
    cv = comparison[(comparison["evaluation"] == "grouped CV") & (comparison["source"] == "all")]
    if cv.empty:
        raise DatasetError("no candidate could be evaluated")

    def key(row: pd.Series) -> tuple[float, float, float, int]:
        def nz(v: Any) -> float:
            return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        return (
            -round(nz(row["macro_f1"]), 3),
            round(nz(row["false_block_long"]), 3),
            round(nz(row["false_block_call"]), 3),
            list(order).index(row["candidate"]),
        )

    best = min((row for _, row in cv.iterrows()), key=key)
    return str(best["candidate"])


def fit_final(name: str, table: pd.DataFrame, seed: int = 0) -> Pipeline:
    """Candidate ``name`` fit on every row of ``table`` (set to predict on one thread)."""
    pipeline = make_candidate(name, seed)
    pipeline.fit(table[list(MODEL_INPUT_COLUMNS)], table["label"].astype(str).to_numpy())
    return for_prediction(pipeline)


def train_table(
    table: pd.DataFrame,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    *,
    n_splits: int = 5,
    seed: int = 0,
) -> TrainOutcome:
    """Compare ``candidates`` on grouped folds of a training table (from
    :func:`training.dataset.build_table`), choose one and refit it on all rows.

    Raises :class:`DatasetError` with fewer than two captures or a single label, and
    :class:`classifier.errors.ModelError` for an unknown candidate.
    """
    for name in candidates:
        make_candidate(name, seed)  # raises for unknown names
    if table["label"].nunique() < 2:
        raise DatasetError(
            "training needs flows of at least two labels; got only "
            f"{table['label'].iloc[0] if len(table) else 'none'}"
        )
    factories: dict[str, Callable[[], Pipeline]] = {
        n: partial(make_candidate, n, seed) for n in candidates
    }
    oof = cross_validate(table, factories, n_splits=n_splits, seed=seed)
    lab_real = {n: lab_to_real(table, f) for n, f in factories.items()}
    comparison = comparison_table(oof, lab_real)
    chosen = choose(comparison, list(candidates))
    log.info("chosen candidate: %s", chosen)
    return TrainOutcome(fit_final(chosen, table, seed), chosen, comparison, oof)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def _data_summary(table: pd.DataFrame) -> dict[str, Any]:
    flows = table[table["horizon"] == "flow"]
    out: dict[str, Any] = {}
    for source, grp in flows.groupby("source"):
        out[str(source)] = {
            "captures": int(grp["capture_id"].nunique()),
            "flows": {str(k): int(v) for k, v in grp["label"].value_counts().items()},
            "sessions": {
                str(k): int(v)
                for k, v in grp.drop_duplicates("capture_id")["session_label"]
                .value_counts()
                .items()
            },
        }
    return out


def _portable(path: Path | str) -> str:
    """A manifest's name for model.json: relative to the repository when inside it, else
    its folder and file name (no path of the machine it was trained on)."""
    p = Path(path).resolve()
    root = Path(__file__).resolve().parents[1]
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return f"{p.parent.name}/{p.name}"


def train(
    manifests: Sequence[Path | str],
    out_dir: Path,
    *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    config: FeaturizeConfig | None = None,
    jobs: int = 1,
    scheduler: str = "local",
    cache_dir: Path | None = None,
    n_splits: int = 5,
    seed: int = 0,
    name: str | None = None,
    progress: bool = False,
) -> ModelInfo:
    """Featurize ``manifests``, compare ``candidates`` by grouped cross-validation, refit
    the best on everything and save it into ``out_dir`` (``model.joblib`` + ``model.json``).

    Raises :class:`DatasetError` for bad manifests or unusable data and
    :class:`classifier.errors.ModelError` for an unknown candidate.
    """
    from training.manifest import manifest_sha256

    config = config or FeaturizeConfig()
    for cand in candidates:
        make_candidate(cand, seed)
    table = build_table(
        manifests, config, jobs=jobs, scheduler=scheduler, cache_dir=cache_dir, progress=progress
    )
    outcome = train_table(table, candidates, n_splits=n_splits, seed=seed)
    paths = [Path(m) for m in manifests]
    metrics = {
        "selection": "max macro-F1 (grouped CV, all decision views, all data); ties -> "
        "lower long-form false-block rate",
        "chosen": outcome.chosen,
        "candidates": {c: describe(c) for c in candidates},
        "comparison": outcome.comparison.to_dict("records"),
        "per_horizon": score_slices(outcome.oof[outcome.chosen]),
        "folds": int(outcome.oof[outcome.chosen]["fold"].nunique()),
        "seed": seed,
        "data": _data_summary(table),
        "featurize": {
            "snapshots": list(config.snapshots),
            "resegment_mss": config.flow.resegment_mss,
        },
        "manifests": {_portable(p): manifest_sha256([p]) for p in paths},
        "training_captures": sorted(table["capture_id"].unique().tolist()),
    }
    info = save_model(
        outcome.pipeline,
        out_dir,
        name=name or out_dir.name,
        labels=list(LABELS),
        decision_windows=[None, *config.snapshots],
        estimator=describe(outcome.chosen),
        training_manifest_sha256=manifest_sha256(paths),
        metrics=_jsonable(metrics),
    )
    log.info("saved %s (%s) to %s", info.name, outcome.chosen, out_dir)
    return info
