"""Verdicts: a loaded model (plus name rules) applied to feature rows.

A verdict is a label (short-form / long-form / other), the probability of that label, and
the reason in words. Services that are short-form as a whole (TikTok) are decided by their
name; the model's own probability is still reported as the confirmation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from classifier.errors import ModelError
from classifier.features.schema import FEATURE_COLUMNS, snapshot_prefix
from classifier.model.artifact import LoadedModel

__all__ = ["MODEL_INPUT_COLUMNS", "model_inputs", "classify_table", "client_summary",
           "SHORT_FORM_SERVICE"]

MODEL_INPUT_COLUMNS = (*FEATURE_COLUMNS, "service")
SHORT_FORM_SERVICE = "short-form-service"
VERDICT_COLUMNS = ("label", "probability", "p_short_form", "decision_window", "reason",
                   "decided_by")


def model_inputs(table: pd.DataFrame, horizon: float | None = None) -> pd.DataFrame:
    """The model's input columns from a featurize table, for the whole flow/window or for
    the early snapshot at ``horizon`` seconds. Raises :class:`ModelError` naming missing
    columns."""
    if horizon is None:
        source = list(FEATURE_COLUMNS)
    else:
        prefix = snapshot_prefix(horizon)
        source = [prefix + c for c in FEATURE_COLUMNS]
    missing = [c for c in [*source, "service"] if c not in table.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise ModelError(f"feature table lacks columns the model needs: {shown}")
    out = table[source].astype(np.float64)
    out.columns = list(FEATURE_COLUMNS)
    out["service"] = table["service"].fillna("unknown").astype(str).to_numpy()
    return out


def _shape_reason(bursts: float, duration: float, bytes_down: float, burst_p50: float,
                  gap_p50: float) -> str:
    return (f"{int(bursts)} download bursts in {duration:.0f} s (median "
            f"{burst_p50 / 1e3:.0f} kB, gap {gap_p50:.1f} s), {bytes_down / 1e6:.1f} MB down")


def classify_table(model: LoadedModel, table: pd.DataFrame,
                   horizon: float | None = None) -> pd.DataFrame:
    """``table`` (from featurize) with the verdict columns added, one verdict per row.

    ``horizon`` picks an early snapshot (e.g. 3.0) instead of the whole flow/window.
    """
    out = table.copy()
    if table.empty:
        for col in VERDICT_COLUMNS:
            out[col] = pd.Series(dtype=object)
        return out
    inputs = model_inputs(table, horizon)
    proba = np.asarray(model.pipeline.predict_proba(inputs))
    classes = [str(c) for c in model.pipeline.classes_]
    best = proba.argmax(axis=1)
    labels = np.array(classes, dtype=object)[best]
    probability = proba[np.arange(len(best)), best]
    p_short = proba[:, classes.index("short-form")] if "short-form" in classes else \
        np.zeros(len(best))
    window = _window_names(table, horizon)
    reasons: list[str] = []
    by_name = (table["category"] == SHORT_FORM_SERVICE).to_numpy()
    shape_columns = ("burst_count", "duration", "bytes_down", "burst_bytes_p50", "burst_gap_p50")
    rows = zip(*(inputs[c].to_numpy() for c in shape_columns), inputs["service"].to_numpy(),
               table["name"].to_numpy(), strict=True)
    for i, (*shape_values, service, name) in enumerate(rows):
        shape = _shape_reason(*shape_values)
        if by_name[i]:
            labels[i] = "short-form"
            probability[i] = 1.0  # decided by the name; the model's view is in the reason
            reasons.append(f"name rule: {service} is short-form as a whole ({name}); "
                           f"model p(short-form)={p_short[i]:.2f}; {shape}")
        else:
            reasons.append(f"traffic shape: {shape}; service {service}")
    out["label"] = labels
    out["probability"] = np.round(probability.astype(float), 4)
    out["p_short_form"] = np.round(p_short.astype(float), 4)
    out["decision_window"] = window
    out["reason"] = reasons
    out["decided_by"] = np.where(by_name, "name", "flow")
    return out


def _window_names(table: pd.DataFrame, horizon: float | None) -> Sequence[str]:
    if horizon is not None:
        return [f"first {horizon:g} s"] * len(table)
    if "window_start" in table.columns:
        return [f"{a:g}-{b:g} s" for a, b in zip(table["window_start"], table["window_end"],
                                                   strict=True)]
    return ["whole flow"] * len(table)


def client_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per client: flows by label and the short-form share of video bytes."""
    if verdicts.empty:
        return pd.DataFrame(columns=["client", "flows", "short_form_flows",
                                     "long_form_flows", "short_form_share_of_video_bytes"])
    v = verdicts.assign(bytes=verdicts["bytes_up"] + verdicts["bytes_down"])
    rows = []
    for client, grp in v.groupby("client", sort=True):
        short = grp[grp["label"] == "short-form"]
        long_ = grp[grp["label"] == "long-form"]
        video = float(short["bytes"].sum() + long_["bytes"].sum())
        rows.append({
            "client": client, "flows": len(grp), "short_form_flows": len(short),
            "long_form_flows": len(long_),
            "short_form_share_of_video_bytes": round(float(short["bytes"].sum()) / video, 4)
            if video else 0.0,
        })
    return pd.DataFrame(rows)
