"""Whole-flow verdicts from the session model and the flow model together."""

from __future__ import annotations

import pandas as pd
import pytest

from classifier.features.session import SessionConfig
from classifier.model.combine import combine_verdicts, session_bytes

T0 = 1_000.0
CLIENT = "10.77.0.2"


def _activity(
    flow_id: int, server: str, start: int, seconds: int, per_second: float, service: str = "unknown"
) -> pd.DataFrame:
    """Per-(flow, second) rows of one flow: ``seconds`` seconds of ``per_second`` bytes
    down, the flow starting ``start`` seconds after T0."""
    return pd.DataFrame(
        {
            "client": CLIENT,
            "server": server,
            "service": service,
            "category": "other",
            "flow_id": flow_id,
            "first_ts": T0 + start,
            "window_start": [float(s) for s in range(seconds)],
            "bytes_down": per_second,
        }
    )


def _windows(group: str, labels: dict[float, tuple[str, float]]) -> pd.DataFrame:
    """Judged session windows of ``group``: window end (seconds after T0) -> (label,
    probability of the label)."""
    return pd.DataFrame(
        [
            {
                "client": CLIENT,
                "group": group,
                "window_end": T0 + end,
                "label": label,
                "probability": p,
            }
            for end, (label, p) in labels.items()
        ]
    )


def test_each_second_counts_for_the_window_that_first_covers_it() -> None:
    activity = _activity(1, "10.77.1.5", 0, 26, 100_000.0)
    windows = _windows("net:10.77.1.0/24", {10: ("short-form", 0.9), 20: ("long-form", 0.7)})
    got = session_bytes(activity, windows, SessionConfig()).set_index("flow_id")
    # seconds 0-9 end in the window ending at 10, 10-19 at 20; 20-25 were never judged
    assert got.loc[1, "short-form"] == pytest.approx(1_000_000.0)
    assert got.loc[1, "long-form"] == pytest.approx(1_000_000.0)
    assert got.loc[1, "other"] == 0.0
    assert got.loc[1, "p:short-form"] == pytest.approx(0.9)
    assert got.loc[1, "p:long-form"] == pytest.approx(0.7)


def test_a_group_clock_starts_at_its_own_first_second() -> None:
    """A flow that starts later in the group counts on the group's clock, not its own."""
    activity = pd.concat(
        [_activity(1, "10.77.1.5", 0, 3, 10_000.0), _activity(2, "10.77.1.6", 7, 6, 200_000.0)]
    )
    windows = _windows("net:10.77.1.0/24", {10: ("other", 0.6), 20: ("short-form", 0.95)})
    got = session_bytes(activity, windows, SessionConfig()).set_index("flow_id")
    # flow 2 runs at seconds 7-12 of the group: 3 s in the first window, 3 s in the second
    assert got.loc[2, "other"] == pytest.approx(600_000.0)
    assert got.loc[2, "short-form"] == pytest.approx(600_000.0)


def _flows(rows: list[tuple[int, str, str, float, float]]) -> pd.DataFrame:
    """Flow-model verdict rows: (flow_id, category, label, probability, bytes down)."""
    return pd.DataFrame(
        [
            {
                "flow_id": i,
                "client": CLIENT,
                "category": cat,
                "label": label,
                "probability": p,
                "bytes_down": down,
                "bytes_up": 1_000.0,
                "reason": "shape",
                "decided_by": "name" if cat == "short-form-service" else "flow",
            }
            for i, cat, label, p, down in rows
        ]
    )


def test_media_flows_take_the_session_verdict_and_the_rest_keep_theirs() -> None:
    config = SessionConfig()
    activity = pd.concat(
        [
            _activity(1, "10.77.1.5", 0, 30, 400_000.0),  # media: 12 MB over 30 s
            _activity(2, "10.77.1.7", 2, 4, 10_000.0),  # an API call in the same group
            _activity(3, "10.77.9.9", 0, 20, 500_000.0, service="tiktok"),  # by name
            _activity(4, "10.77.5.5", 0, 20, 500_000.0),  # a group never judged
        ]
    )
    windows = pd.concat(
        [
            _windows(
                "net:10.77.1.0/24",
                {10: ("short-form", 0.9), 20: ("short-form", 0.85), 30: ("other", 0.5)},
            ),
            _windows("tiktok", {10: ("other", 0.6), 20: ("other", 0.6)}),
        ]
    )
    flows = _flows(
        [
            (1, "video", "long-form", 0.8, 12e6),
            (2, "video", "short-form", 0.7, 4e4),
            (3, "short-form-service", "short-form", 1.0, 1e7),
            (4, "video", "long-form", 0.9, 1e7),
        ]
    )
    got = combine_verdicts(flows, activity, windows, config).set_index("flow_id")
    assert list(got["decided_by"]) == ["session", "flow", "name", "flow"]
    assert list(got["label"]) == ["short-form", "short-form", "short-form", "long-form"]
    assert got.loc[1, "flow_label"] == "long-form" and got.loc[1, "flow_probability"] == 0.8
    assert got.loc[1, "session_short_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert got.loc[1, "probability"] == pytest.approx(0.875)
    assert got.loc[1, "reason"].startswith("session: 67% of its 12.0 MB came in short-form")
    assert "flow model alone: long-form 0.80" in got.loc[1, "reason"]
    assert got.loc[2, "reason"] == "shape" and got.loc[2, "session_short_share"] == 0.0


def test_the_session_model_answers_short_form_or_not_only() -> None:
    """Where the session says not short-form, a flow-model short-form is overruled, and a
    flow-model long-form / other stands."""
    activity = pd.concat(
        [_activity(5, "10.77.2.5", 0, 20, 400_000.0), _activity(6, "10.77.2.6", 0, 20, 400_000.0)]
    )
    windows = _windows("net:10.77.2.0/24", {10: ("long-form", 0.7), 20: ("long-form", 0.9)})
    flows = _flows([(5, "video", "short-form", 0.9, 8e6), (6, "video", "other", 0.6, 8e6)])
    got = combine_verdicts(flows, activity, windows, SessionConfig()).set_index("flow_id")
    assert list(got["label"]) == ["long-form", "other"]
    assert list(got["decided_by"]) == ["session", "flow"]
    assert got.loc[5, "probability"] == pytest.approx(0.8)
    assert got.loc[6, "probability"] == 0.6
    assert (
        got.loc[6, "reason"] == "shape; session: not short-form (0% of its 8.0 MB in "
        "short-form windows)"
    )


def test_without_judged_windows_the_flow_model_decides() -> None:
    flows = _flows([(1, "video", "long-form", 0.8, 12e6)])
    activity = _activity(1, "10.77.1.5", 0, 30, 400_000.0)
    empty = _windows("net:10.77.1.0/24", {}).reindex(
        columns=["client", "group", "window_end", "label", "probability"]
    )
    got = combine_verdicts(flows, activity, empty, SessionConfig())
    assert list(got["decided_by"]) == ["flow"] and list(got["label"]) == ["long-form"]
