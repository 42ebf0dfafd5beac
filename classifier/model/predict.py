"""Verdicts: a loaded model (plus name rules) applied to feature rows.

A verdict is a label (short-form / long-form / other), the probability of that label, and
the reason in words. Services that are short-form as a whole (TikTok) are decided by their
name; the model's own probability is still reported as the confirmation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from classifier.errors import ModelError
from classifier.features.schema import FEATURE_COLUMNS, snapshot_prefix
from classifier.model.artifact import LoadedModel
from classifier.model.name_prior import name_prior

if TYPE_CHECKING:  # imported where a table is made: live mode judges without pandas
    import pandas as pd

__all__ = [
    "MODEL_INPUT_COLUMNS",
    "model_inputs",
    "classify_table",
    "client_summary",
    "SHORT_FORM_SERVICE",
    "RowVerdicts",
    "verdict_arrays",
    "decision_window",
]

MODEL_INPUT_COLUMNS = (*FEATURE_COLUMNS, "service")
SHORT_FORM_SERVICE = "short-form-service"
VERDICT_COLUMNS = (
    "label",
    "probability",
    "p_short_form",
    "decision_window",
    "reason",
    "decided_by",
)


def _input_columns(table: pd.DataFrame, horizon: float | None) -> list[str]:
    """The table's columns holding ``FEATURE_COLUMNS`` for the whole flow/window or for the
    early snapshot at ``horizon`` seconds. Raises :class:`ModelError` naming missing
    columns (``service`` included)."""
    if horizon is None:
        source = list(FEATURE_COLUMNS)
    else:
        prefix = snapshot_prefix(horizon)
        source = [prefix + c for c in FEATURE_COLUMNS]
    missing = [c for c in [*source, "service"] if c not in table.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ModelError(f"feature table lacks columns the model needs: {shown}")
    return source


def _services(table: pd.DataFrame) -> list[str]:
    return table["service"].fillna("unknown").astype(str).tolist()


def model_inputs(table: pd.DataFrame, horizon: float | None = None) -> pd.DataFrame:
    """The model's input columns from a featurize table, for the whole flow/window or for
    the early snapshot at ``horizon`` seconds. Raises :class:`ModelError` naming missing
    columns."""
    out = table[_input_columns(table, horizon)].astype(np.float64)
    out.columns = list(FEATURE_COLUMNS)
    out["service"] = _services(table)
    return out


def _shape_reason(
    bursts: float, duration: float, bytes_down: float, burst_p50: float, gap_p50: float
) -> str:
    return (
        f"{int(bursts)} download bursts in {duration:.0f} s (median "
        f"{burst_p50 / 1e3:.0f} kB, gap {gap_p50:.1f} s), {bytes_down / 1e6:.1f} MB down"
    )


@dataclass(frozen=True)
class RowVerdicts:
    """Verdicts of rows, as arrays (see :func:`verdict_arrays`)."""

    label: npt.NDArray[np.object_]
    probability: npt.NDArray[np.float64]
    p_short: npt.NDArray[np.float64]
    by_name: npt.NDArray[np.bool_]
    reason: list[str]


_SHAPE = [
    FEATURE_COLUMNS.index(c)
    for c in ("burst_count", "duration", "bytes_down", "burst_bytes_p50", "burst_gap_p50")
]


def verdict_arrays(
    model: LoadedModel,
    numeric: npt.NDArray[np.float64],
    services: Sequence[str],
    categories: Sequence[str],
    names: Sequence[str | None],
) -> RowVerdicts:
    """Verdicts of rows given as arrays: ``numeric`` holds ``FEATURE_COLUMNS`` (rows x
    columns), then each row's service, category and name. The pipeline's array twin
    (``model.predictor``) computes the probabilities when the model has one, else the
    pipeline itself on a DataFrame."""
    if model.predictor is not None:
        proba = model.predictor.predict_proba(numeric, services)
        classes = list(model.predictor.classes)
    else:
        import pandas as pd

        frame = pd.DataFrame(numeric, columns=list(FEATURE_COLUMNS))
        frame["service"] = list(services)
        proba = np.asarray(model.pipeline.predict_proba(frame))
        classes = [str(c) for c in model.pipeline.classes_]
    shape_says = np.array(classes, dtype=object)[proba.argmax(axis=1)]
    shape_says_short, shape_says_long = shape_says == "short-form", shape_says == "long-form"
    prior = name_prior(proba, classes, categories)
    proba, ruled_out = prior.proba, prior.no_short
    best = proba.argmax(axis=1)
    labels = np.array(classes, dtype=object)[best]
    probability = proba[np.arange(len(best)), best].astype(np.float64)
    p_short = (
        proba[:, classes.index("short-form")] if "short-form" in classes else np.zeros(len(best))
    ).astype(np.float64)
    by_name = np.array([c == SHORT_FORM_SERVICE for c in categories], dtype=bool)
    labels[by_name] = "short-form"
    probability[by_name] = 1.0  # decided by the name; the model's view is in the reason
    reasons: list[str] = []
    for i, shape_values in enumerate(numeric[:, _SHAPE].tolist()):
        shape = _shape_reason(*shape_values)
        if by_name[i]:
            reasons.append(
                f"name rule: {services[i]} is short-form as a whole ({names[i]}); "
                f"model p(short-form)={p_short[i]:.2f}; {shape}"
            )
        elif ruled_out[i] and shape_says_short[i]:
            reasons.append(
                f"traffic shape: {shape}; service {services[i]} ({categories[i]}) carries no "
                "short-form video: its name rules short-form out"
            )
        elif prior.long_is_short[i] and shape_says_long[i]:
            reasons.append(
                f"traffic shape: {shape}; service {services[i]} ({categories[i]}) carries no "
                "long-form video: what fetches like a video there is short-form"
            )
        else:
            reasons.append(f"traffic shape: {shape}; service {services[i]}")
    return RowVerdicts(labels, probability, p_short, by_name, reasons)


def classify_table(
    model: LoadedModel, table: pd.DataFrame, horizon: float | None = None
) -> pd.DataFrame:
    """``table`` (from featurize) with the verdict columns added, one verdict per row.

    ``horizon`` picks an early snapshot (e.g. 3.0) instead of the whole flow/window.
    """
    import pandas as pd

    out = table.copy()
    if table.empty:
        for col in VERDICT_COLUMNS:
            out[col] = pd.Series(dtype=object)
        return out
    v = verdict_arrays(
        model,
        table[_input_columns(table, horizon)].to_numpy(np.float64),
        _services(table),
        table["category"].tolist(),
        table["name"].tolist(),
    )
    out["label"] = v.label
    out["probability"] = np.round(v.probability, 4)
    out["p_short_form"] = np.round(v.p_short, 4)
    out["decision_window"] = _window_names(table, horizon)
    out["reason"] = v.reason
    out["decided_by"] = np.where(v.by_name, "name", "flow")
    return out


def decision_window(horizon: float | None) -> str:
    """What a verdict on whole-flow rows (or their snapshot at ``horizon``) saw."""
    return "whole flow" if horizon is None else f"first {horizon:g} s"


def _window_names(table: pd.DataFrame, horizon: float | None) -> Sequence[str]:
    if horizon is None and "window_start" in table.columns:
        return [
            f"{a:g}-{b:g} s"
            for a, b in zip(table["window_start"], table["window_end"], strict=True)
        ]
    return [decision_window(horizon)] * len(table)


def client_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per client: flows by label and the short-form share of video bytes."""
    import pandas as pd

    if verdicts.empty:
        return pd.DataFrame(
            columns=[
                "client",
                "flows",
                "short_form_flows",
                "long_form_flows",
                "short_form_share_of_video_bytes",
            ]
        )
    v = verdicts.assign(bytes=verdicts["bytes_up"] + verdicts["bytes_down"])
    rows = []
    for client, grp in v.groupby("client", sort=True):
        short = grp[grp["label"] == "short-form"]
        long_ = grp[grp["label"] == "long-form"]
        video = float(short["bytes"].sum() + long_["bytes"].sum())
        rows.append(
            {
                "client": client,
                "flows": len(grp),
                "short_form_flows": len(short),
                "long_form_flows": len(long_),
                "short_form_share_of_video_bytes": round(float(short["bytes"].sum()) / video, 4)
                if video
                else 0.0,
            }
        )
    return pd.DataFrame(rows)
