"""Scores of verdict frames: per-class precision/recall/F1, macro-F1, false-block rates,
and the same per (data source, horizon) slice and per candidate model.

Shared by :mod:`training.evaluate` (cross-validation) and :mod:`training.report` (the
written report); neither imports the other for these. A verdict frame has the columns
``label`` (truth), ``pred`` (verdict), ``capture_id``, ``session_label`` and, for the
slices, ``source`` and ``horizon``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from classifier.model.artifact import LABELS
from training.dataset import FLOW_HORIZON

__all__ = ["SHORT", "scores", "horizon_order", "score_slices", "comparison_table"]

SHORT = "short-form"
_LONG = "long-form"
_CALL = "call"


def _rate(mask: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(pred[mask] == SHORT)) if mask.any() else math.nan


def scores(preds: pd.DataFrame) -> dict[str, Any]:
    """Per-class precision/recall/F1/support (precision is NaN for a class never predicted,
    recall NaN for a class absent from the truth), macro-F1 (over the labels present in
    truth or verdicts), accuracy, confusion matrix (rows = truth, columns = verdict, ``LABELS``
    order) and false-block rates: long-form rows and call-session rows called short-form.
    """
    y = preds["label"].astype(str).to_numpy()
    p = preds["pred"].astype(str).to_numpy()
    if len(y) == 0:
        return {
            "rows": 0,
            "captures": 0,
            "macro_f1": math.nan,
            "accuracy": math.nan,
            "false_block_long": math.nan,
            "false_block_call": math.nan,
            "per_class": {},
            "confusion": [],
        }
    prec, rec, f1, support = precision_recall_fscore_support(
        y, p, labels=list(LABELS), zero_division=0
    )
    predicted = {label: int(np.sum(p == label)) for label in LABELS}
    per_class = {
        label: {
            "precision": float(prec[i]) if predicted[label] else math.nan,
            "recall": float(rec[i]) if support[i] else math.nan,
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(LABELS)
    }
    return {
        "rows": int(len(y)),
        "captures": int(preds["capture_id"].nunique()),
        "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
        "accuracy": float(np.mean(y == p)),
        "false_block_long": _rate(y == _LONG, p),
        "false_block_call": _rate((preds["session_label"] == _CALL).to_numpy(), p),
        "per_class": per_class,
        "confusion": confusion_matrix(y, p, labels=list(LABELS)).tolist(),
    }


def horizon_order(values: Sequence[str]) -> list[str]:
    """Horizons sorted by time, ``"flow"`` (the whole flow) last."""
    numeric = sorted((v for v in set(values) if v != FLOW_HORIZON), key=float)
    return numeric + ([FLOW_HORIZON] if FLOW_HORIZON in set(values) else [])


def score_slices(preds: pd.DataFrame) -> list[dict[str, Any]]:
    """Flat score rows for every (source, horizon) slice, including "all" (per-source
    slices only when there is more than one source)."""
    out: list[dict[str, Any]] = []
    found = sorted(preds["source"].unique())
    sources = ["all", *found] if len(found) > 1 else ["all"]
    for source in sources:
        part = preds if source == "all" else preds[preds["source"] == source]
        for horizon in ["all", *horizon_order(list(part["horizon"].unique()))]:
            sub = part if horizon == "all" else part[part["horizon"] == horizon]
            s = scores(sub)
            out.append(
                {
                    "source": source,
                    "horizon": horizon,
                    "rows": s["rows"],
                    "captures": s["captures"],
                    "macro_f1": s["macro_f1"],
                    "accuracy": s["accuracy"],
                    "false_block_long": s["false_block_long"],
                    "false_block_call": s["false_block_call"],
                    "short_recall": s["per_class"].get(SHORT, {}).get("recall", math.nan),
                    "short_precision": s["per_class"].get(SHORT, {}).get("precision", math.nan),
                    "short_support": s["per_class"].get(SHORT, {}).get("support", 0),
                }
            )
    return out


def comparison_table(
    oof: dict[str, pd.DataFrame], lab_real: dict[str, pd.DataFrame | None] | None = None
) -> pd.DataFrame:
    """One row per (candidate, evaluation, source): grouped CV over all decision views
    pooled, per source, plus train-on-lab/test-on-real when available."""
    rows: list[dict[str, Any]] = []
    for name, preds in oof.items():
        for s in score_slices(preds):
            if s["horizon"] != "all":
                continue
            rows.append({"candidate": name, "evaluation": "grouped CV", **s})
    for name, preds in (lab_real or {}).items():
        if preds is None:
            continue
        s = scores(preds)
        rows.append(
            {
                "candidate": name,
                "evaluation": "train lab -> test real",
                "source": "real",
                "horizon": "all",
                "rows": s["rows"],
                "captures": s["captures"],
                "macro_f1": s["macro_f1"],
                "accuracy": s["accuracy"],
                "false_block_long": s["false_block_long"],
                "false_block_call": s["false_block_call"],
                "short_recall": s["per_class"][SHORT]["recall"],
                "short_precision": s["per_class"][SHORT]["precision"],
                "short_support": s["per_class"][SHORT]["support"],
            }
        )
    return pd.DataFrame(rows)
