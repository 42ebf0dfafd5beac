"""Figures (matplotlib, Agg canvas) and Markdown for training and evaluation reports.

Every figure title names the data it comes from (data source and evaluation), as the
project's honesty rule asks. Figures are drawn on matplotlib ``Figure`` objects with an Agg
canvas, without pyplot, so importing this module never changes the global backend (a
notebook keeps its inline plots).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from classifier.errors import ShortflowError
from classifier.model.artifact import LABELS
from training.metrics import horizon_order, score_slices

__all__ = [
    "markdown_table",
    "comparison_markdown",
    "plot_confusion",
    "plot_pr_curves",
    "plot_accuracy_vs_time",
    "plot_importance",
    "plot_comparison",
    "write_evaluation_report",
    "SHORT_FORM_CAVEAT",
]

SHORT_FORM_CAVEAT = (
    "Real short-form data is ONE Instagram Reels trace session (several TCP flows, "
    "imported from a packet-metadata JSON trace with receive-offload frames). With "
    "splits by capture, short-form recall on real data comes from that single session "
    "(it is tested only in the fold that holds it out, trained on no other real "
    "short-form); figures for short-form on real data are therefore anecdotal until "
    "more real captures or lab sessions exist."
)

_COLUMNS = [
    ("candidate", "candidate"),
    ("evaluation", "evaluation"),
    ("source", "data"),
    ("captures", "captures"),
    ("rows", "rows"),
    ("macro_f1", "macro-F1"),
    ("accuracy", "accuracy"),
    ("short_recall", "short-form recall"),
    ("short_precision", "short-form precision"),
    ("false_block_long", "false-block long-form"),
    ("false_block_call", "false-block calls"),
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, columns: Sequence[tuple[str, str]] | None = None) -> str:
    """A GitHub Markdown table of ``frame`` (``columns``: (column, header) pairs)."""
    columns = list(columns or [(c, c) for c in frame.columns])
    columns = [(c, h) for c, h in columns if c in frame.columns]
    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c, _ in columns) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: pd.DataFrame) -> str:
    """The candidate comparison as a Markdown table."""
    return markdown_table(comparison, _COLUMNS)


def _sources(preds: pd.DataFrame) -> list[str]:
    sources = sorted(preds["source"].unique())
    return sources if len(sources) == 1 else ["all", *sources]


def _part(preds: pd.DataFrame, source: str) -> pd.DataFrame:
    return preds if source == "all" else preds[preds["source"] == source]


def _subplots(ncols: int, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)


def _save(fig: Figure, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90, bbox_inches="tight")
    except OSError as exc:
        raise ShortflowError(f"{path}: cannot write figure ({exc.strerror})") from exc
    return path


def plot_confusion(preds: pd.DataFrame, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix per data source (counts in the cells)."""
    from sklearn.metrics import confusion_matrix

    sources = _sources(preds)
    fig, axes = _subplots(len(sources), (4.8 * len(sources), 3.8))
    for k, (ax, source) in enumerate(zip(axes[0], sources, strict=True)):
        part = _part(preds, source)
        cm = confusion_matrix(
            part["label"].astype(str), part["pred"].astype(str), labels=list(LABELS)
        )
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(LABELS)):
            for j in range(len(LABELS)):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]}\n{norm[i, j]:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.6 else "black",
                )
        ax.set_xticks(range(len(LABELS)), LABELS, rotation=20)
        ax.set_yticks(range(len(LABELS)), LABELS)
        ax.set_xlabel("verdict")
        if k == 0:
            ax.set_ylabel("truth")
        ax.set_title(f"data: {source} ({part['capture_id'].nunique()} captures)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_pr_curves(preds: pd.DataFrame, path: Path, title: str) -> Path:
    """Precision-recall curve per class, one line per data source."""
    fig, axes = _subplots(len(LABELS), (4.2 * len(LABELS), 3.6))
    for ax, label in zip(axes[0], LABELS, strict=True):
        for source in _sources(preds):
            part = _part(preds, source)
            truth = (part["label"] == label).to_numpy()
            if truth.sum() == 0 or truth.all():
                continue
            score = part[f"p_{label}"].to_numpy()
            precision, recall, _ = precision_recall_curve(truth, score)
            ap = average_precision_score(truth, score)
            ax.plot(recall, precision, label=f"{source} (AP {ap:.2f}, n+={int(truth.sum())})")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(label, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no positives in this data", ha="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_accuracy_vs_time(slices: pd.DataFrame, path: Path, title: str) -> Path:
    """Macro-F1, accuracy and long-form false-block rate against decision time, one line
    per data source. ``slices``: rows of :func:`training.metrics.score_slices`."""

    data = slices[slices["horizon"] != "all"]
    order = horizon_order(list(data["horizon"].unique()))
    fig, axes = _subplots(3, (12.6, 3.6))
    metrics = [
        ("macro_f1", "macro-F1"),
        ("accuracy", "accuracy"),
        ("false_block_long", "long-form flows called short-form"),
    ]
    for ax, (col, name) in zip(axes[0], metrics, strict=True):
        for source in sorted(data["source"].unique()):
            part = data[data["source"] == source].set_index("horizon").reindex(order)
            ax.plot(range(len(order)), part[col].astype(float), marker="o", label=source)
        ax.set_xticks(range(len(order)), [f"{h} s" if h != "flow" else "whole flow" for h in order])
        ax.set_xlabel("decision time")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_importance(importance: pd.DataFrame, path: Path, title: str, top: int = 20) -> Path:
    """Horizontal bars: the ``top`` permutation importances (drop in macro-F1)."""
    shown = importance.head(top).iloc[::-1]
    fig, axes = _subplots(1, (7, 0.28 * len(shown) + 1.2))
    ax = axes[0][0]
    ax.barh(shown["unit"], shown["importance_mean"], xerr=shown["importance_std"], color="#4c72b0")
    ax.set_xlabel("drop in macro-F1 when shuffled (held-out folds)")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_comparison(comparison: pd.DataFrame, path: Path, title: str) -> Path:
    """Grouped bars: macro-F1 and long-form false-block rate per candidate and data."""
    cv = comparison.copy()
    cv["slice"] = (
        cv["evaluation"].where(cv["evaluation"] != "grouped CV", "CV")
        + ": "
        + cv["source"].astype(str)
    )
    slices = list(dict.fromkeys(cv["slice"]))
    candidates = list(dict.fromkeys(cv["candidate"]))
    fig, axes = _subplots(2, (11, 3.6))
    width = 0.8 / max(len(slices), 1)
    for ax, (col, name) in zip(
        axes[0],
        [("macro_f1", "macro-F1"), ("false_block_long", "false-block long-form")],
        strict=True,
    ):
        for k, sl in enumerate(slices):
            part = cv[cv["slice"] == sl].set_index("candidate").reindex(candidates)
            ax.bar(
                np.arange(len(candidates)) + k * width,
                part[col].astype(float).fillna(0),
                width,
                label=sl,
            )
        ax.set_xticks(np.arange(len(candidates)) + width * (len(slices) - 1) / 2, candidates)
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _horizons(preds: pd.DataFrame) -> list[str]:

    return [h for h in horizon_order(list(preds["horizon"].unique())) if h != "flow"]


def _data_line(preds: pd.DataFrame) -> str:
    parts = []
    for source, grp in preds.groupby("source"):
        labels = grp.drop_duplicates(["capture_id", "flow_id"])["label"].value_counts()
        parts.append(
            f"{source}: {grp['capture_id'].nunique()} captures, "
            + ", ".join(f"{n} {lab} flows" for lab, n in labels.items())
        )
    return "; ".join(parts)


def write_evaluation_report(
    out_dir: Path,
    *,
    model_name: str,
    model_info: dict[str, Any],
    manifests: list[str],
    heldout: pd.DataFrame | None,
    cv: pd.DataFrame,
    importance: pd.DataFrame,
    seen_captures: int,
    n_folds: int,
    lab_to_real: pd.DataFrame | None = None,
) -> tuple[Path, list[Path]]:
    """Write ``report.md`` and its figures into ``out_dir``; return the report path and
    the figure paths. Raises :class:`ShortflowError` when ``out_dir`` is not writable."""

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShortflowError(f"{out_dir}: cannot create report folder ({exc.strerror})") from exc
    figures: list[Path] = []
    lines = [
        f"# Evaluation of model `{model_name}`",
        "",
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} from manifests: "
        + ", ".join(f"`{m}`" for m in manifests)
        + ".",
        "",
        f"Model estimator: {model_info.get('estimator', '?')}; trained on manifest hash "
        f"`{str(model_info.get('training_manifest_sha256', ''))[:16]}`.",
        "",
        "Verdicts are what `shortflow classify` gives: TikTok-category flows are "
        "short-form by name; all other flows by the model's most likely label. "
        "Rows are decision views: each flow after "
        + ", ".join(f"{h} s" for h in _horizons(cv))
        + " and as a whole flow.",
        "",
        "## Caveat on short-form data",
        "",
        SHORT_FORM_CAVEAT,
        "",
    ]
    sets: list[tuple[str, str, pd.DataFrame]] = []
    if heldout is not None and len(heldout):
        sets.append(("heldout", "the saved model on captures it was not trained on", heldout))
    else:
        lines += [
            "## Saved model on unseen captures",
            "",
            f"None: all {seen_captures} captures of these manifests were in the "
            "model's training set, so the saved model cannot be tested on them. "
            "Only the cross-validated figures below are honest.",
            "",
        ]
    sets.append(
        (
            "cv",
            f"grouped {n_folds}-fold cross-validation by capture of the same "
            "pipeline recipe (refit per fold)",
            cv,
        )
    )
    if lab_to_real is not None and len(lab_to_real):
        sets.append(
            (
                "lab2real",
                "the same recipe trained on all lab captures, tested on all real captures",
                lab_to_real,
            )
        )
    else:
        lines += [
            "(No train-on-lab / test-on-real figures: these manifests do not hold "
            "both lab and real captures.)",
            "",
        ]
    for key, what, preds in sets:
        lines += [f"## {what[0].upper()}{what[1:]}", "", f"Data: {_data_line(preds)}.", ""]
        if key == "heldout" and seen_captures:
            lines += [
                f"({seen_captures} captures were in the training set and are left "
                "out of this section.)",
                "",
            ]
        slices = pd.DataFrame(score_slices(preds))
        lines += [
            markdown_table(
                slices,
                [
                    ("source", "data"),
                    ("horizon", "decision time"),
                    ("captures", "captures"),
                    ("rows", "rows"),
                    ("macro_f1", "macro-F1"),
                    ("accuracy", "accuracy"),
                    ("short_recall", "short-form recall"),
                    ("short_precision", "short-form precision"),
                    ("false_block_long", "false-block long-form"),
                    ("false_block_call", "false-block calls"),
                ],
            ),
            "",
        ]
        label = f"data: {what}"
        for name, fig in [
            (
                "confusion",
                plot_confusion(
                    preds, out_dir / f"{key}_confusion.png", f"Confusion matrix; {label}"
                ),
            ),
            (
                "pr",
                plot_pr_curves(
                    preds, out_dir / f"{key}_pr_curves.png", f"Precision-recall per class; {label}"
                ),
            ),
            (
                "time",
                plot_accuracy_vs_time(
                    slices,
                    out_dir / f"{key}_accuracy_vs_time.png",
                    f"Accuracy vs decision time; {label}",
                ),
            ),
        ]:
            figures.append(fig)
            lines += [f"![{name}]({fig.name})", "", f"*{fig.name}: {label}.*", ""]
    imp = plot_importance(
        importance,
        out_dir / "feature_importance.png",
        "Permutation importance, held-out folds of grouped CV",
    )
    figures.append(imp)
    lines += [
        "## Feature importance",
        "",
        "Permutation importance measured on held-out folds only (the drop in "
        "macro-F1 when one feature, or the SPLT block, is shuffled). Data: the "
        "grouped cross-validation above.",
        "",
        f"![importance]({imp.name})",
        "",
        markdown_table(
            importance.head(15),
            [("unit", "feature"), ("importance_mean", "mean drop"), ("importance_std", "std")],
        ),
        "",
    ]
    metrics = model_info.get("metrics", {})
    if metrics.get("comparison"):
        lines += [
            "## Comparison recorded at training time",
            "",
            comparison_markdown(pd.DataFrame(metrics["comparison"])),
            "",
        ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report, figures
