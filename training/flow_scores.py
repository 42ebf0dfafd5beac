"""What a user of `shortflow classify` sees, leave one source out: the share of each
capture class's bytes whose flow ends up labelled short-form / long-form / other.

For each held-out real source, a session estimator is fitted on every other source (and
the simulated sessions), each capture of the held-out source is classified the way
`shortflow classify` does it (flow model, then :func:`classifier.model.combine.
combine_verdicts` with the session windows judged with hindsight) and its flows' bytes
are summed by the flow's final label and by the flow model's own label. The flow model is
the one given (the shipped one unless told otherwise): it is not refitted per fold, so its
own column flatters it on every source it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from classifier.features.featurize import FeaturizeConfig
from classifier.features.session import (
    ACTIVITY_COLUMNS,
    SESSION_FEATURES,
    SessionConfig,
    session_table,
)
from classifier.model.artifact import LoadedModel
from classifier.model.combine import combine_verdicts
from classifier.model.predict import classify_table
from classifier.model.session_model import Agreement, classify_sessions
from classifier.model.timeline import ACTIVITY_CONFIG
from training.address_names import AddressNames
from training.dataset import default_cache_dir, featurize_cached, load_rows
from training.sessions import SYNTHETIC_SOURCES, source_name

__all__ = ["flow_byte_scores", "flow_scores_markdown"]

_LABELS = ("short-form", "long-form", "other")


def _capture_bytes(
    flow_model: LoadedModel,
    estimator: Any,
    config: SessionConfig,
    rule: Agreement,
    row: Any,
    cache: Path,
    address_names: AddressNames | None,
) -> dict[str, float]:
    flows = featurize_cached(row.local_path, row.sha256, FeaturizeConfig(), cache)
    activity = featurize_cached(
        row.local_path, row.sha256, ACTIVITY_CONFIG, cache, ACTIVITY_COLUMNS
    )
    if address_names is not None:
        flows, activity = address_names.apply(flows), address_names.apply(activity)
    windows = classify_sessions(estimator, session_table(activity, config), rule, hindsight=True)
    verdicts = combine_verdicts(classify_table(flow_model, flows), activity, windows, config)
    nbytes = verdicts["bytes_up"] + verdicts["bytes_down"]
    out = {"bytes": float(nbytes.sum())}
    for label in _LABELS:
        out[label] = float(nbytes[verdicts["label"] == label].sum())
        out[f"flow model {label}"] = float(nbytes[verdicts["flow_label"] == label].sum())
    return out


def flow_byte_scores(
    manifests: Sequence[Path | str],
    table: pd.DataFrame,
    factory: Callable[[], Any],
    flow_model: LoadedModel,
    config: SessionConfig,
    rule: Agreement | None = None,
    cache_dir: Path | None = None,
    address_names: AddressNames | None = None,
) -> pd.DataFrame:
    """One row per (held-out real source, capture label): captures, MB, and the shares of
    bytes labelled short-form / long-form / other, finally and by the flow model alone.
    ``table``: labelled session rows of the same manifests plus any simulated ones (what
    :func:`training.sessions.leave_one_source_out` takes); ``address_names`` as there."""
    rule = rule or Agreement()
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    rows = [(r, source_name(r.path, r.recorded)) for r in load_rows(manifests)]
    held = sorted({s for _, s in rows} - set(SYNTHETIC_SOURCES))
    records: list[dict[str, Any]] = []
    for source in held:
        train = table[table["source"] != source]
        estimator = factory().fit(train[list(SESSION_FEATURES)], train["label"])
        for row, src in rows:
            if src == source:
                got = _capture_bytes(flow_model, estimator, config, rule, row, cache, address_names)
                records.append({"source": source, "label": row.label, **got})
    data = pd.DataFrame(records)
    if data.empty:
        return data
    sums = data.groupby(["source", "label"], sort=True).sum(numeric_only=True)
    out = pd.DataFrame(
        {
            "captures": data.groupby(["source", "label"], sort=True).size(),
            "mb": sums["bytes"] / 1e6,
            **{label: sums[label] / sums["bytes"] for label in _LABELS},
            **{
                f"flow model {label}": sums[f"flow model {label}"] / sums["bytes"]
                for label in _LABELS
            },
        }
    )
    return out.reset_index()


def flow_scores_markdown(scores: pd.DataFrame) -> str:
    """The table of :func:`flow_byte_scores` in Markdown (shares as percentages)."""
    head = [
        "held-out source",
        "capture label",
        "captures",
        "MB",
        "short-form",
        "long-form",
        "other",
        "short-form by the flow model alone",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in scores.to_dict(orient="records"):
        shares = [r[label] for label in _LABELS] + [r["flow model short-form"]]
        lines.append(
            f"| {r['source']} | {r['label']} | {r['captures']} | {r['mb']:.0f} | "
            + " | ".join(f"{100 * v:.1f} %" for v in shares)
            + " |"
        )
    return "\n".join(lines)
