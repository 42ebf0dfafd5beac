"""Per-client activity timelines from the session model.

:func:`capture_sessions` featurizes a capture as per-(flow, second) rows, builds the session
view with the settings the session model was trained with and classifies every window;
:func:`with_sessions` gives a capture's flow verdicts the session model's answer and its
timeline (what `shortflow classify` and the captures upload show);
:func:`timeline` merges a session's consecutive windows with the same verdict into spans;
:func:`timeline_lines` renders them for the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from classifier.features.featurize import FeaturizeConfig
from classifier.features.session import session_table
from classifier.flows import FlowConfig
from classifier.model.combine import combine_verdicts
from classifier.model.session_model import SessionModel, classify_sessions, pending_text

__all__ = [
    "ACTIVITY_CONFIG",
    "CaptureSessions",
    "capture_sessions",
    "with_sessions",
    "timeline",
    "timeline_lines",
]

ACTIVITY_CONFIG = FeaturizeConfig(snapshots=(), window=1.0)
"""Per-(flow, second) rows: what the session view reads."""

TIMELINE_COLUMNS = (
    "client",
    "group",
    "start",
    "end",
    "label",
    "p_short",
    "pending",
    "short_form_votes",
    "short_form_needed",
    "reason",
)


@dataclass(frozen=True)
class CaptureSessions:
    """A capture seen by the session model: its per-(flow, second) ``activity`` rows and
    every session window with its verdict (``windows``, see :func:`classify_sessions`)."""

    activity: pd.DataFrame
    windows: pd.DataFrame


def capture_sessions(
    model: SessionModel, capture: Path, *, skip_bad: bool = False, flow: FlowConfig | None = None
) -> CaptureSessions:
    """Featurize ``capture`` per (flow, second) and classify its session windows with
    hindsight (see :func:`classifier.model.session_model.agreed`: the windows that led to
    a short-form verdict are short-form too; live mode cannot look ahead).
    ``flow``: the flow settings (default: :data:`ACTIVITY_CONFIG`'s); give those of a flow
    table whose ``flow_id``s the activity rows must match."""
    from classifier.features.engine import featurize

    config = ACTIVITY_CONFIG if flow is None else replace(ACTIVITY_CONFIG, flow=flow)
    activity = featurize(capture, config, engine="fast", skip_bad=skip_bad)
    return CaptureSessions(
        activity,
        classify_sessions(model.estimator, session_table(activity, model.config), hindsight=True),
    )


def with_sessions(
    model: SessionModel,
    capture: Path,
    verdicts: pd.DataFrame,
    config: FeaturizeConfig,
    horizon: float | None,
    *,
    skip_bad: bool = False,
    same_flows: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``verdicts`` (``classify_table`` of ``capture`` featurized with ``config``) with the
    session model's answer for whole flows (:func:`classifier.model.combine.
    combine_verdicts`), and the capture's :func:`timeline`. Rows of an early snapshot
    (``horizon``) or of windows stay as they are, and so do verdicts whose ``flow_id``s do
    not come from the compiled path (``same_flows`` false: another backend read them)."""
    run = capture_sessions(model, capture, skip_bad=skip_bad, flow=config.flow)
    if same_flows and horizon is None and config.window is None:
        verdicts = combine_verdicts(verdicts, run.activity, run.windows, model.config)
    return verdicts, timeline(run.windows)


SHOWN_BYTES = 1_000_000.0
"""A (client, group) appears in the timeline once one of its windows moved this much down
(less is page loads, API calls and background: nothing a person watches)."""


def timeline(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Spans of consecutive windows of one (client, group) with the same verdict (label
    and ``pending``): start (the first window's end minus the step it newly covers), end,
    label, the highest ``p_short``, ``pending``, the most ``short_form_votes`` of a window,
    ``short_form_needed`` and the reason of the span's last window. Groups that never
    moved ``SHOWN_BYTES`` in a window are left out."""
    spans: list[list[object]] = []
    for (client, group), part in verdicts.groupby(["client", "group"], sort=True):
        if float(part["window_bytes"].max()) < SHOWN_BYTES:
            continue
        part = part.sort_values("window_end")
        verdict = part["label"] + "/" + part["pending"].fillna("")
        run = (verdict != verdict.shift()).cumsum()
        step = part["window_end"].diff().median() if len(part) > 1 else 10.0
        for _, seg in part.groupby(run, sort=False):
            last = seg.iloc[-1]
            spans.append(
                [
                    client,
                    group,
                    float(seg["window_end"].iloc[0]) - float(step),
                    float(last["window_end"]),
                    last["label"],
                    float(seg["p_short"].max()),
                    last["pending"],
                    int(seg["short_form_votes"].max()),
                    int(last["short_form_needed"]),
                    last["reason"],
                ]
            )
    out = pd.DataFrame(spans, columns=list(TIMELINE_COLUMNS))
    return out.sort_values(["client", "start"], kind="stable").reset_index(drop=True)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")


def _covered(starts: list[float], ends: list[float]) -> float:
    """Seconds covered by the union of the intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(zip(starts, ends, strict=True)):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def timeline_lines(spans: pd.DataFrame) -> list[str]:
    """One line per span, grouped under each client; times are UTC. A client's
    short-form minutes count time once where spans of several groups overlap. A span with
    short-form pending says so after its label (:func:`pending_text`)."""
    if spans.empty:
        return ["(no client moved enough traffic to judge)"]
    lines: list[str] = []
    for client, part in spans.groupby("client", sort=True):
        short = part[part["label"] == "short-form"]
        minutes = _covered(short["start"].tolist(), short["end"].tolist()) / 60
        lines.append(f"client {client}: short-form for {minutes:.1f} min")
        for r in part.itertuples():
            label = (
                f"{r.label} ({pending_text(r.short_form_votes, r.short_form_needed)})"
                if isinstance(r.pending, str)
                else r.label
            )
            lines.append(
                f"  {_clock(r.start)}-{_clock(r.end)} UTC  {label:<10}  "
                f"p_short {r.p_short:.2f}  {r.group}  ({r.reason})"
            )
    return lines
