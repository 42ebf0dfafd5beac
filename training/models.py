"""Candidate models: each one scikit-learn ``Pipeline`` from the raw model-input frame
(``FEATURE_COLUMNS`` + ``service``) to a label.

Candidates (short names used on the command line):

- ``names``: :class:`NameRules`, the per-service majority label. It reads only the
  ``service`` column, i.e. what a DNS/SNI blocklist can know.
- ``rf``: ExtraTrees (randomised trees; smaller and faster than a RandomForest here).
- ``hgb``: HistGradientBoosting.
- ``lgbm``: LightGBM.

Hyper-parameters are fixed (no tuning), so cross-validated figures are not tuned on the
data they are reported on. Seeds are fixed and ``n_jobs`` is at most 2 (LightGBM runs on
one thread: on a busy 2-core machine its OpenMP threads cost far more than they save).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from classifier.errors import ModelError
from classifier.features.schema import FEATURE_COLUMNS

__all__ = [
    "CANDIDATES",
    "NameRules",
    "make_candidate",
    "parse_candidates",
    "describe",
    "for_prediction",
]

_SERVICE = "service"


class NameRules(ClassifierMixin, BaseEstimator):
    """Baseline: the label is the majority label of the flow's service in the training data.

    Reads only the ``service`` column. ``predict_proba`` returns the service's label
    frequencies (smoothed by ``alpha``); services never seen in training get the overall
    frequencies. This is the best a name blocklist can do: it cannot split one service
    (e.g. YouTube) into Shorts and long videos.
    """

    def __init__(self, column: str = _SERVICE, alpha: float = 0.5) -> None:
        self.column = column
        self.alpha = alpha

    def fit(self, X: pd.DataFrame, y: Any) -> NameRules:
        """Learn per-service label frequencies. Raises :class:`ModelError` when ``X`` has
        no service column."""
        services = self._services(X)
        labels = np.asarray(y).astype(str)
        self.classes_ = np.array(sorted(set(labels)), dtype=object)
        index = {c: i for i, c in enumerate(self.classes_)}
        counts: dict[str, np.ndarray] = {}
        for service, label in zip(services, labels, strict=True):
            row = counts.setdefault(service, np.zeros(len(self.classes_)))
            row[index[label]] += 1
        total = np.zeros(len(self.classes_))
        for row in counts.values():
            total += row
        self.prior_ = self._normalise(total)
        self.table_ = {s: self._normalise(row) for s, row in counts.items()}
        self.majority_ = {s: str(self.classes_[int(np.argmax(p))]) for s, p in self.table_.items()}
        self.n_features_in_ = 1
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "table_")
        services = self._services(X)
        return (
            np.vstack([self.table_.get(s, self.prior_) for s in services])
            if len(services)
            else np.zeros((0, len(self.classes_)))
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[proba.argmax(axis=1)], dtype=object)

    def _normalise(self, counts: np.ndarray) -> np.ndarray:
        smoothed = counts + self.alpha
        return np.asarray(smoothed / smoothed.sum(), dtype=np.float64)

    def _services(self, X: pd.DataFrame) -> list[str]:
        if not isinstance(X, pd.DataFrame) or self.column not in X.columns:
            raise ModelError(f"name rules need a '{self.column}' column in the model input")
        return [str(s) for s in X[self.column].fillna("unknown")]


def _columns(dense: bool) -> ColumnTransformer:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=not dense)
    return ColumnTransformer(
        [("num", "passthrough", list(FEATURE_COLUMNS)), ("service", encoder, [_SERVICE])],
        remainder="drop",
        sparse_threshold=0.0 if dense else 0.3,
        verbose_feature_names_out=False,
    )


def _names(seed: int) -> Pipeline:
    del seed  # deterministic by construction
    return Pipeline([("names", NameRules())])


def _rf(seed: int) -> Pipeline:
    model = ExtraTreesClassifier(
        n_estimators=150,
        min_samples_leaf=2,
        max_features="sqrt",
        class_weight="balanced",
        random_state=seed,
        n_jobs=2,
    )
    return Pipeline([("columns", _columns(dense=True)), ("model", model)])


def _hgb(seed: int) -> Pipeline:
    model = HistGradientBoostingClassifier(
        max_iter=120,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        class_weight="balanced",
        early_stopping=False,
        random_state=seed,
    )
    return Pipeline([("columns", _columns(dense=True)), ("model", model)])


def _lgbm(seed: int) -> Pipeline:
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(
        n_estimators=200,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=10,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        class_weight="balanced",
        random_state=seed,
        n_jobs=1,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    return Pipeline([("columns", _columns(dense=True)), ("model", model)])


CANDIDATES: dict[str, Callable[[int], Pipeline]] = {
    "names": _names,
    "rf": _rf,
    "hgb": _hgb,
    "lgbm": _lgbm,
}
"""Candidate name -> factory taking the seed."""

_DESCRIPTIONS = {
    "names": "name rules (per-service majority label; service column only)",
    "rf": "ExtraTrees, 150 trees, balanced class weights",
    "hgb": "HistGradientBoosting, 120 iterations, balanced class weights",
    "lgbm": "LightGBM, 200 trees, 15 leaves, balanced class weights",
}


def make_candidate(name: str, seed: int = 0) -> Pipeline:
    """A fresh, unfitted pipeline for candidate ``name``. Raises :class:`ModelError` for an
    unknown name."""
    try:
        factory = CANDIDATES[name]
    except KeyError:
        raise ModelError(
            f"unknown model candidate {name!r}; choose from {', '.join(CANDIDATES)}"
        ) from None
    return factory(seed)


def parse_candidates(text: str) -> list[str]:
    """``"rf,hgb"`` -> ``["rf", "hgb"]``. Raises :class:`ModelError` for unknown names or
    an empty list."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ModelError("no model candidates given")
    for name in names:
        if name not in CANDIDATES:
            raise ModelError(
                f"unknown model candidate {name!r}; choose from {', '.join(CANDIDATES)}"
            )
    return list(dict.fromkeys(names))


def describe(name: str) -> str:
    """One line saying what candidate ``name`` is."""
    return _DESCRIPTIONS.get(name, name)


def for_prediction(pipeline: Any) -> Any:
    """Set a fitted pipeline's estimator to one thread: predictions are the same, and on a
    router (or in many small permutation-importance calls) thread start-up costs more than
    it saves. Returns ``pipeline``."""
    steps = getattr(pipeline, "named_steps", {})
    model = steps.get("model")
    if model is not None and "n_jobs" in model.get_params():
        model.set_params(n_jobs=1)
    return pipeline
