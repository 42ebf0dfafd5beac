"""Dataset manifests -> labelled session-view rows, and the session model's evaluation.

:func:`session_rows` featurizes every capture as per-(flow, second) rows (cached per capture
and configuration, like :mod:`training.dataset`), builds the session view
(:func:`classifier.features.session.session_table`) and labels each (client, group, window)
from the capture's manifest row (:func:`session_labels`).

:func:`leave_one_source_out` trains on every data source but one and predicts the held-out
one, for each source in turn; :func:`source_scores` turns those predictions into the
figures that matter to a user: the share of short-form time detected, how long after a
session's start the first short-form verdict comes, the share of long-form and of other
(work, calls, web, idle) time wrongly called short-form, and the share of each class's time
that a live router would have held under a block (:func:`under_block`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classifier.enforce.policy import Policy
from classifier.errors import DatasetError
from classifier.features.session import (
    ACTIVITY_COLUMNS,
    SESSION_FEATURES,
    SessionConfig,
    session_table,
)
from classifier.model.session_model import (
    SHORT,
    Agreement,
    agreed,
    verdicts,
    window_probabilities,
)
from classifier.model.timeline import ACTIVITY_CONFIG
from classifier.parallel import ordered_map
from training.address_names import AddressNames
from training.dataset import default_cache_dir, featurize_cached, load_rows
from training.manifest import SESSION_LABELS

__all__ = [
    "source_name",
    "session_labels",
    "session_rows",
    "leave_one_source_out",
    "source_scores",
    "under_block",
    "simulated_rows",
    "CANDIDATES",
    "CHOSEN",
    "scores_markdown",
    "realism_auc",
    "SHAPE_FEATURES",
    "read_timeline",
    "sim_to_real",
]

log = logging.getLogger(__name__)

MEDIA_LABELS = ("short-form", "long-form")
_OTHER_LABELS = ("web", "call", "other", "other-video")
_MEDIA_BYTES = 1_000_000.0  # a video window of a video session moves at least this much
_MEDIA_SHARE = 0.10  # an unnamed group with this share of a capture's bytes may be the video
SYNTHETIC_SOURCES = ("sim", "lab")
"""Sources that are not real traffic: simulated sessions and traffic-lab captures."""

#: source name -> pattern on the capture's file name or path (first match wins)
_SOURCES = (
    ("netpkt", r"netpkt_"),
    ("sdrdray", r"sdrdray_"),
    ("uuvideo", r"uuvideo_"),
    ("requet", r"(^|/)requet/|^[AB]\d?_(baseline|movement)"),
    ("ndpi-nfstream", r"(^|/)(ndpi|nfstream)/"),
)


def source_name(path: Path, recorded: str) -> str:
    """Which data source a capture comes from: ``lab``, one of the public sources
    (``netpkt``, ``sdrdray``, ``uuvideo``, ``requet``, ``ndpi-nfstream``), or
    ``household`` (anything else: a user's own recordings)."""
    if recorded.strip().lower() == "lab":
        return "lab"
    text = Path(path).as_posix()
    for name, pattern in _SOURCES:
        if re.search(pattern, text):
            return name
    return "household"


def session_labels(sessions: pd.DataFrame, session_label: str, app: str) -> pd.Series:
    """The label of each session row, or ``None`` (left out), from the capture's label.

    * web, call, other, other-video: every row is ``other``.
    * mixed: left out (no timeline of what was watched when).
    * short-form / long-form: the media groups take the capture's label in windows that
      moved at least 1 MB down; their lighter windows are left out (a clip playing from
      the buffer, a player between segments: nothing to judge). The media group is the
      app's service when flows are named; in a capture without that name, every unnamed
      group (server network) that carries at least 10 % of the capture's bytes down. Rows
      of other named services are ``other``; other unnamed rows are left out.
    """
    if session_label in _OTHER_LABELS:
        return pd.Series("other", index=sessions.index, dtype=object)
    if session_label not in MEDIA_LABELS:
        return pd.Series([None] * len(sessions), index=sessions.index, dtype=object)
    group = sessions["group"].astype(str)
    unnamed = (group == "unnamed") | group.str.startswith("net:")
    if (group == app).any():
        media = group == app
    else:
        step_bytes = sessions.groupby(group)["bytes_step"].sum()
        big = step_bytes[step_bytes >= _MEDIA_SHARE * step_bytes.sum()].index
        media = unnamed & group.isin(big)
    heavy = sessions["window_bytes"] >= _MEDIA_BYTES
    labels = pd.Series([None] * len(sessions), index=sessions.index, dtype=object)
    labels[media & heavy] = session_label
    labels[~media & ~unnamed] = "other"
    return labels.where(labels.notna(), None)


def read_timeline(capture: Path) -> list[tuple[float, float, str]] | None:
    """The labelled time intervals of ``capture`` from its sidecar
    ``<capture without suffix>.timeline.json`` (the traffic lab writes them; so can anyone:
    ``{"intervals": [{"start": unix s, "end": unix s, "label": "short-form"}, ...]}``), or
    None when there is none. Raises :class:`DatasetError` for a malformed file."""
    sidecar = Path(capture).with_suffix(".timeline.json")
    if not sidecar.is_file():
        return None
    try:
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
        out = [(float(iv["start"]), float(iv["end"]), str(iv["label"])) for iv in doc["intervals"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{sidecar}: not a timeline (expected intervals with start, end and label): {exc}"
        ) from exc
    for start, end, label in out:
        if end <= start or label not in SESSION_LABELS:
            raise DatasetError(
                f"{sidecar}: bad interval {start}-{end} {label!r} (end after "
                f"start; label one of {', '.join(SESSION_LABELS)})"
            )
    return out


def _interval_labels(
    sessions: pd.DataFrame, intervals: list[tuple[float, float, str]], step: float
) -> pd.Series:
    """Per session row: the label of the interval covering most of its last ``step``
    seconds (what a verdict at its end newly covers), or None."""
    lo = (sessions["window_end"] - step).to_numpy(float)
    hi = sessions["window_end"].to_numpy(float)
    best = np.zeros(len(sessions))
    labels = np.full(len(sessions), None, dtype=object)
    for start, end, label in intervals:
        overlap = np.clip(np.minimum(hi, end) - np.maximum(lo, start), 0, None)
        better = overlap > np.maximum(best, step / 2)
        labels[better], best[better] = label, overlap[better]
    return pd.Series(labels, index=sessions.index, dtype=object)


def _labelled(sessions: pd.DataFrame, row: Any, step: float) -> pd.Series:
    intervals = read_timeline(row.path)
    if intervals is None:
        return session_labels(sessions, row.label, row.app)
    per_window = _interval_labels(sessions, intervals, step)
    out = pd.Series([None] * len(sessions), index=sessions.index, dtype=object)
    for label in per_window.dropna().unique():
        part = sessions[per_window == label]
        out[part.index] = session_labels(part, str(label), row.app)
    return out


def session_rows(
    manifests: Sequence[Path | str],
    config: SessionConfig | None = None,
    *,
    jobs: int = 1,
    cache_dir: Path | None = None,
    progress: bool = False,
    address_names: AddressNames | None = None,
) -> pd.DataFrame:
    """Labelled session-view rows of every capture in ``manifests`` (rows without a label
    are dropped). A capture with a timeline sidecar (:func:`read_timeline`) is labelled
    per window from its intervals instead of its manifest label. ``address_names`` names
    nameless flows by their server's network first (an evaluation aid,
    :mod:`training.address_names`). Raises :class:`DatasetError` for bad manifests or
    unreadable captures."""
    config = config or SessionConfig()
    rows = load_rows(manifests)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    args = [(row.local_path, row.sha256, ACTIVITY_CONFIG, cache, ACTIVITY_COLUMNS) for row in rows]
    tables = ordered_map(
        featurize_cached, args, jobs=jobs, scheduler="local", progress=progress, error=DatasetError
    )
    parts: list[pd.DataFrame] = []
    for activity, row in zip(tables, rows, strict=True):
        if address_names is not None:
            activity = address_names.apply(activity)
        sessions = session_table(activity, config)
        if sessions.empty:
            continue
        sessions["label"] = _labelled(sessions, row, config.step)
        sessions = sessions[sessions["label"].notna()].copy()
        if sessions.empty:
            continue
        sessions["capture_id"] = row.capture_id
        sessions["capture"] = row.path.name
        sessions["source"] = source_name(row.path, row.recorded)
        sessions["app"] = row.app
        sessions["session_label"] = row.label
        parts.append(sessions)
    if not parts:
        raise DatasetError("no labelled session windows in the given manifests")
    return pd.concat(parts, ignore_index=True)


def leave_one_source_out(
    table: pd.DataFrame,
    factory: Callable[[], Any],
    sources: Sequence[str] | None = None,
    rule: Agreement | None = None,
) -> pd.DataFrame:
    """Predictions for every row of each held-out source, from a model fitted on all the
    other sources (``factory()`` gives a fresh, unfitted estimator). Simulated rows
    (source ``sim``) are always on the training side unless ``sources`` names them. Adds
    ``p_short``, ``p_long`` and ``verdict`` (production's rule: :func:`agreed` with
    ``rule``, by default the policy's defaults)."""
    held = list(sources) if sources is not None else sorted(set(table["source"].unique()) - {"sim"})
    parts = []
    for source in held:
        test = table[table["source"] == source]
        train = table[table["source"] != source]
        if test.empty:
            continue
        if set(train["capture_id"]) & set(test["capture_id"]):
            raise AssertionError(f"capture on both sides of the {source} split")
        model = factory().fit(train[list(SESSION_FEATURES)], train["label"])
        parts.append(_predict(model, test, rule or Agreement()))
    return pd.concat(parts, ignore_index=True)


def sim_to_real(
    table: pd.DataFrame, factory: Callable[[], Any], rule: Agreement | None = None
) -> pd.DataFrame | None:
    """Predictions for every real row (not simulated, not lab) from a model fitted on the
    simulated rows alone (None without both); columns as :func:`leave_one_source_out`."""
    sim = table[table["source"] == "sim"]
    real = table[~table["source"].isin(SYNTHETIC_SOURCES)]
    if sim.empty or real.empty:
        return None
    model = factory().fit(sim[list(SESSION_FEATURES)], sim["label"])
    return _predict(model, real, rule or Agreement())


def _predict(model: Any, rows: pd.DataFrame, rule: Agreement) -> pd.DataFrame:
    out = rows.sort_values(["capture_id", "client", "group", "window_end"], kind="stable")
    p_short, p_long = window_probabilities(model, out)
    out["p_short"], out["p_long"] = p_short, p_long
    age, rate = out["window_end"] - out["session_start"], out["down_mbps"]
    short = agreed(out["p_short"], out[["capture_id", "client", "group"]], rule, age=age, rate=rate)
    out["verdict"] = verdicts(short.to_numpy(), p_short, p_long)
    return out


def _first_short_delay(preds: pd.DataFrame) -> float:
    """Median over short-form sessions of seconds from the session's start to its first
    short-form verdict (inf for a session never called short-form)."""
    delays = []
    for _, part in preds[preds["label"] == SHORT].groupby(["capture_id", "client", "group"]):
        hit = part[part["verdict"] == SHORT]
        delays.append(
            float((hit["window_end"] - hit["session_start"]).min()) if len(hit) else float("inf")
        )
    return float(np.median(delays)) if delays else float("nan")


def under_block(preds: pd.DataFrame, block_seconds: float, step: float = 10.0) -> pd.Series:
    """Per row: whether live mode would have held this window's last ``step`` seconds
    under a block. A short-form verdict at a window's end blocks the session (its client
    and group) for ``block_seconds`` (the policy's ``block_seconds``); each later
    short-form verdict renews it. Counterfactual: the traffic is taken as recorded, as if
    the block had not stopped it. Rows must be in time order within a session."""
    out = np.zeros(len(preds), dtype=bool)
    window_end = preds["window_end"].to_numpy(float)
    short = (preds["verdict"] == SHORT).to_numpy()
    keys = ["capture_id", "client", "group"]
    for rows in preds.groupby(keys, sort=False).indices.values():
        ends = window_end[rows]
        called = ends[short[rows]]
        if not len(called):
            continue
        start = ends - step
        last = np.searchsorted(called, start, side="right") - 1  # latest verdict at or before
        held = last >= 0
        held[held] = start[held] < called[last[held]] + block_seconds
        out[rows] = held
    return pd.Series(out, index=preds.index)


def _share(rows: pd.DataFrame, column: str, weight: str | None = None) -> float:
    """The share of ``rows`` (weighted by ``weight``) where the flag ``column`` is set."""
    if rows.empty:
        return float("nan")
    called = rows[column].to_numpy(bool)
    w = rows[weight].to_numpy(float) if weight else np.ones(len(rows))
    return float((w * called).sum() / w.sum()) if w.sum() > 0 else float("nan")


def source_scores(
    preds: pd.DataFrame, step: float = 10.0, block_seconds: float = Policy().block_seconds
) -> pd.DataFrame:
    """Per held-out source (and over all): minutes per class, the share of short-form time
    called short-form (by time and by bytes), the median seconds to a session's first
    short-form verdict, the shares of long-form and other time called short-form, and the
    share of each class's time under a block lasting ``block_seconds``
    (:func:`under_block`)."""
    preds = preds.assign(
        called=preds["verdict"] == SHORT, blocked=under_block(preds, block_seconds, step)
    )
    out: list[dict[str, Any]] = []
    groups: list[tuple[str, pd.DataFrame]] = [*preds.groupby("source"), ("all", preds)]
    for source, part in groups:
        short = part[part["label"] == SHORT]
        long_ = part[part["label"] == "long-form"]
        other = part[part["label"] == "other"]
        out.append(
            {
                "source": source,
                "short_min": len(short) * step / 60,
                "long_min": len(long_) * step / 60,
                "other_min": len(other) * step / 60,
                "short_detected": _share(short, "called"),
                "short_bytes_detected": _share(short, "called", "bytes_step"),
                "first_short_s": _first_short_delay(part),
                "long_as_short": _share(long_, "called"),
                "other_as_short": _share(other, "called"),
                "short_blocked": _share(short, "blocked"),
                "long_blocked": _share(long_, "blocked"),
                "other_blocked": _share(other, "blocked"),
            }
        )
    return pd.DataFrame(out)


def simulated_rows(
    sessions_per_kind: int, seed: int = 0, config: SessionConfig | None = None
) -> pd.DataFrame:
    """Labelled session-view rows of simulated sessions (:mod:`training.simulate`),
    ``sessions_per_kind`` of each kind, source ``sim``. Deterministic for ``seed``."""
    from training.simulate import SIM_KINDS, simulate

    config = config or SessionConfig()
    parts = []
    for kind in SIM_KINDS:
        for i in range(sessions_per_kind):
            label, activity = simulate(kind, seed * 100_000 + i)
            sessions = session_table(activity, config)
            if sessions.empty:
                continue
            sessions["label"] = session_labels(sessions, label, "sim")
            sessions = sessions[sessions["label"].notna()].copy()
            sessions["capture_id"] = f"sim-{kind}-{seed}-{i}"
            sessions["capture"] = f"sim-{kind}-{i}"
            sessions["source"] = "sim"
            sessions["app"] = kind
            sessions["session_label"] = label
            parts.append(sessions)
    return pd.concat(parts, ignore_index=True)


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        FunctionTransformer(np.log1p),
        StandardScaler(),
        LogisticRegression(C=0.3, class_weight="balanced", max_iter=2000),
    )


SHAPE_FEATURES = (
    "active_share",
    "bursts",
    "burst_gap_median",
    "burst_gap_cv",
    "media_flows",
    "new_media_flows",
    "media_age_median",
    "top_flow_share",
)
"""The session features that describe how a player fetches (timing, connections), not how
much: rates and burst sizes follow the video's bitrate and the link, which change with
the device and the network, not with what the person watches."""


def _logreg_shape() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        ColumnTransformer([("shape", "passthrough", list(SHAPE_FEATURES))]),
        FunctionTransformer(np.log1p),
        StandardScaler(),
        LogisticRegression(C=0.3, class_weight="balanced", max_iter=2000),
    )


def _hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=100, max_leaf_nodes=7, min_samples_leaf=10, class_weight="balanced", random_state=0
    )


def _extra_trees() -> Any:
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(
        n_estimators=200, min_samples_leaf=5, class_weight="balanced", random_state=0
    )


CANDIDATES: dict[str, Callable[[], Any]] = {
    "logreg-shape": _logreg_shape,
    "logreg": _logreg,
    "hgb": _hgb,
    "et": _extra_trees,
}
"""Session-model candidates; hyper-parameters fixed here, never tuned on reported folds."""
CHOSEN = "logreg-shape"
"""The shipped candidate: the fewest degrees of freedom for the least real short-form data,
and no input that follows bitrate or link speed."""

_SCORE_HEADER = (
    "| held-out source | short-form min | long-form min | other min | short-form "
    "time detected | short-form bytes detected | first short-form verdict (s, "
    "median) | long-form time called short | other time called short | short-form time "
    "under a block | long-form time under a block | other time under a block |"
)


def scores_markdown(scores: pd.DataFrame) -> str:
    """``source_scores`` as a Markdown table (``-`` where a class is absent)."""

    def fmt(v: Any, pct: bool) -> str:
        if isinstance(v, float) and math.isnan(v):
            return "-"
        if isinstance(v, float) and math.isinf(v):
            return "never"
        return f"{v:.1%}" if pct else f"{v:.1f}"

    lines = [_SCORE_HEADER, "|" + "---|" * 12]
    for r in scores.itertuples():
        lines.append(
            f"| {r.source} | {fmt(r.short_min, False)} | {fmt(r.long_min, False)} | "
            f"{fmt(r.other_min, False)} | {fmt(r.short_detected, True)} | "
            f"{fmt(r.short_bytes_detected, True)} | {fmt(r.first_short_s, False)} | "
            f"{fmt(r.long_as_short, True)} | {fmt(r.other_as_short, True)} | "
            f"{fmt(r.short_blocked, True)} | {fmt(r.long_blocked, True)} | "
            f"{fmt(r.other_blocked, True)} |"
        )
    return "\n".join(lines)


def realism_auc(
    table: pd.DataFrame, synthetic: str = "sim", folds: int = 5, source: str | None = None
) -> dict[str, float]:
    """Per class: how well a classifier tells the ``synthetic`` source's session windows
    (``sim`` or ``lab``) from real ones (ROC AUC of grouped cross-validation by capture;
    0.5 = indistinguishable); with ``source``, from that real source's windows only."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    out: dict[str, float] = {}
    real = ~table["source"].isin(SYNTHETIC_SOURCES)
    if source is not None:
        real &= table["source"] == source
    for label in ("short-form", "long-form", "other"):
        part = table[(table["label"] == label) & (real | (table["source"] == synthetic))]
        is_sim = (part["source"] == synthetic).to_numpy()
        if is_sim.all() or not is_sim.any() or part["capture_id"].nunique() < folds:
            continue
        scores = np.zeros(len(part))
        split = GroupKFold(n_splits=folds).split(part, is_sim, part["capture_id"])
        for train, test in split:
            if len(set(is_sim[train])) < 2:
                scores[test] = 0.5
                continue
            model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
            model.fit(part.iloc[train][list(SESSION_FEATURES)], is_sim[train])
            scores[test] = model.predict_proba(part.iloc[test][list(SESSION_FEATURES)])[:, 1]
        out[label] = float(roc_auc_score(is_sim, scores))
    return out
