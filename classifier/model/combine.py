"""One verdict per flow of a capture from both models.

The session model judges a client's activity per service (or server network) over sliding
windows; the flow model judges each flow alone. For a flow that carried media through
judged session windows, the session model answers whether it was short-form: each second
of its download counts for the verdict of the window that first covered that second, and
the label holding most of those bytes is the session's label for the flow. It is the
flow's label when it is short-form, or when the flow model alone said short-form (the
session model overrules it); otherwise the flow model's long-form / other stands. Other
flows (page loads, API calls, flows of groups too quiet to judge) keep the flow model's
verdict, and names that are short-form as a whole (TikTok) decide before either model.
``decided_by`` says which of the three decided; the flow model's own verdict stays in
``flow_label`` / ``flow_probability``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from classifier.features.session import SessionConfig, session_groups
from classifier.model.session_model import LONG, OTHER, SHORT

__all__ = ["DECIDED_BY", "session_bytes", "combine_verdicts"]

DECIDED_BY = ("name", "session", "flow")
_LABELS = (SHORT, LONG, OTHER)


def session_bytes(
    activity: pd.DataFrame, windows: pd.DataFrame, config: SessionConfig
) -> pd.DataFrame:
    """Per ``flow_id``: bytes down that fell in judged session windows, by the window's
    label (columns ``short-form``, ``long-form``, ``other``), and the probability of each
    label weighted by those bytes (``p:<label>``).

    ``activity``: per-(flow, second) rows (see :data:`classifier.features.session.
    ACTIVITY_COLUMNS`); ``windows``: :func:`classifier.model.session_model.classify_sessions`
    of the session table built from them with ``config``.
    """
    columns = ["flow_id", *_LABELS, *(f"p:{label}" for label in _LABELS)]
    if activity.empty or windows.empty:
        return pd.DataFrame(columns=columns)
    data = activity.loc[
        :, ["client", "server", "service", "flow_id", "first_ts", "window_start", "bytes_down"]
    ].copy()
    data["group"] = session_groups(data, config)
    t_abs = data["first_ts"].to_numpy(float) + data["window_start"].to_numpy(float)
    data["t_abs"] = t_abs
    # the session view's clock: each group's first second, windows ending every step
    t0 = data.groupby(["client", "group"])["t_abs"].transform("min").map(math.floor)
    step = int(round(config.step))
    second = np.floor(t_abs - t0.to_numpy(float)).astype(np.int64)
    data["window_end"] = t0.to_numpy(float) + (second // step + 1) * step
    judged = windows.loc[:, ["client", "group", "window_end", "label", "probability"]]
    merged = data.merge(judged, on=["client", "group", "window_end"], how="inner")
    if merged.empty:
        return pd.DataFrame(columns=columns)
    merged["weighted"] = merged["probability"] * merged["bytes_down"]
    sums = merged.pivot_table(
        index="flow_id",
        columns="label",
        values=["bytes_down", "weighted"],
        aggfunc="sum",
        fill_value=0.0,
    )
    out = pd.DataFrame(index=sums.index)
    for label in _LABELS:
        got = ("bytes_down", label) in sums.columns
        nbytes = sums[("bytes_down", label)] if got else 0.0
        out[label] = nbytes
        out[f"p:{label}"] = (
            (sums[("weighted", label)] / nbytes).where(nbytes > 0, 0.0) if got else 0.0
        )
    return out.reset_index()[columns]


def combine_verdicts(
    flows: pd.DataFrame, activity: pd.DataFrame, windows: pd.DataFrame, config: SessionConfig
) -> pd.DataFrame:
    """``flows`` (whole-flow rows with the verdict columns of
    :func:`classifier.model.predict.classify_table`) with the final ``label`` /
    ``probability`` / ``reason`` / ``decided_by`` (``session`` where the session model
    decided), plus ``flow_label``, ``flow_probability`` and ``session_short_share`` (the
    share of the flow's judged bytes in short-form windows; 0 when the session model did
    not decide)."""
    out = flows.copy()
    out["flow_label"] = out["label"]
    out["flow_probability"] = out["probability"]
    out["session_short_share"] = 0.0
    if out.empty:
        return out
    per_flow = session_bytes(activity, windows, config).set_index("flow_id")
    judged = per_flow[list(_LABELS)].sum(axis=1) if not per_flow.empty else pd.Series(dtype=float)
    take = judged[judged >= config.media_bytes].index
    rows = out["flow_id"].isin(take) & (out["decided_by"] == "flow")
    if not rows.any():
        return out
    ids = out.loc[rows, "flow_id"]
    part = per_flow.loc[ids.to_numpy()]
    label = part[list(_LABELS)].idxmax(axis=1).to_numpy()
    total = judged.loc[ids.to_numpy()].to_numpy(float)
    share = part[SHORT].to_numpy(float) / total
    prob = np.array([part[f"p:{lab}"].iloc[i] for i, lab in enumerate(label)], dtype=float)
    covered = np.array([part[lab].iloc[i] for i, lab in enumerate(label)]) / total
    out.loc[rows, "session_short_share"] = np.round(share, 4)
    old = out.loc[rows, ["flow_label", "flow_probability", "reason"]].to_numpy()
    # the session model answers "short-form or not"; long-form vs other stays the flow
    # model's unless it said short-form and the session model disagrees
    decide = (label == SHORT) | (old[:, 0] == SHORT)
    where = out.index[rows.to_numpy()]
    mine = where[decide]
    out.loc[mine, "label"] = label[decide]
    out.loc[mine, "probability"] = np.round(prob[decide], 4)
    out.loc[mine, "decided_by"] = "session"
    out.loc[mine, "reason"] = [
        f"session: {c:.0%} of its {t / 1e6:.1f} MB came in {lab} windows of its "
        f"client's activity; flow model alone: {fl} {fp:.2f}"
        for c, t, lab, (fl, fp, _) in zip(
            covered[decide], total[decide], label[decide], old[decide], strict=True
        )
    ]
    out.loc[where[~decide], "reason"] = [
        f"{why}; session: not short-form ({s:.0%} of its {t / 1e6:.1f} MB in short-form windows)"
        for s, t, (_, _, why) in zip(share[~decide], total[~decide], old[~decide], strict=True)
    ]
    return out
