"""The capture timeline: spans of one verdict per (client, group), and their text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from classifier.features.session import SESSION_FEATURES
from classifier.model.session_model import MIN_VOTE_MBPS, classify_sessions, may_vote
from classifier.model.timeline import timeline, timeline_lines

T0 = 1_800_000_000.0


class _Fixed:
    """A session model whose p_short is a row's ``bursts`` and p_long its
    ``top_flow_share``."""

    classes_ = np.array(["long-form", "other", "short-form"])

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        ps, pl = rows["bursts"].to_numpy(), rows["top_flow_share"].to_numpy()
        return np.column_stack([pl, 1.0 - ps - pl, ps])


def _windows(
    p_short: list[float], p_long: list[float], start: float = T0 - 60, mbps: float = 2.0
) -> pd.DataFrame:
    """Windows every 10 s from ``T0`` of a session that began at ``start`` (by default a
    minute before: every window is old enough to vote), each moving ``mbps`` down."""
    rows = pd.DataFrame(0.0, index=range(len(p_short)), columns=list(SESSION_FEATURES))
    rows["bursts"], rows["top_flow_share"], rows["down_mbps"] = p_short, p_long, mbps
    return rows.assign(
        client="10.77.1.2",
        group="net:10.77.9.0/24",  # no service name: the probabilities stay as given
        window_end=[T0 + 10.0 * (i + 1) for i in range(len(p_short))],
        session_start=start,
        window_bytes=2e6,
    )


# three windows at 0.9 agree (3 of 5); the last two reach 0.9 too but never agree
P_SHORT = [0.3, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9]
P_LONG = [0.6, 0.05, 0.05, 0.05, 0.8, 0.8, 0.8, 0.8, 0.8, 0.05, 0.05]


def test_windows_not_yet_agreed_have_short_form_pending() -> None:
    live = classify_sessions(_Fixed(), _windows(P_SHORT, P_LONG))
    assert live["label"].tolist() == ["long-form"] * 3 + ["short-form"] * 3 + ["long-form"] * 5
    pending = [False, True, True, False, False, False, False, False, False, True, True]
    assert live["pending"].eq("short-form").tolist() == pending
    assert live["short_form_votes"].tolist() == [0, 1, 2, 3, 3, 3, 2, 1, 0, 1, 2]
    assert set(live["short_form_needed"]) == {3}
    # with hindsight the windows that led to agreement are short-form; the last two stay
    # pending: the capture ends before they could agree
    late = classify_sessions(_Fixed(), _windows(P_SHORT, P_LONG), hindsight=True)
    assert late["label"].tolist() == ["long-form", *["short-form"] * 5, *["long-form"] * 5]
    assert late["pending"].eq("short-form").tolist() == [False] * 9 + [True, True]
    empty = classify_sessions(_Fixed(), _windows([], []))
    assert {"pending", "short_form_votes", "short_form_needed"} <= set(empty.columns)


def test_windows_of_a_young_session_do_not_vote() -> None:
    """The session began at ``T0``: its windows ending 10 and 20 s in do not vote, so the
    three windows at 0.9 make two votes, not the three the rule needs."""
    young = classify_sessions(_Fixed(), _windows(P_SHORT, P_LONG, start=T0))
    assert young["short_form_votes"].tolist()[:5] == [0, 0, 1, 2, 2]
    assert "short-form" not in set(young["label"])
    assert young["pending"].eq("short-form").tolist()[1:4] == [True] * 3


def test_windows_slower_than_the_floor_do_not_vote() -> None:
    """The same windows at 0.4 Mbit/s (below ``MIN_VOTE_MBPS``) cast no vote, live or with
    hindsight, whatever their p_short; one fast window among slow ones is one vote."""
    assert MIN_VOTE_MBPS == 0.5
    for hindsight in (False, True):
        slow = classify_sessions(_Fixed(), _windows(P_SHORT, P_LONG, mbps=0.4), hindsight=hindsight)
        assert slow["short_form_votes"].max() == 0 and "short-form" not in set(slow["label"])
        assert slow["pending"].eq("short-form").sum() == 5  # still the likeliest label
    mixed = _windows(P_SHORT, P_LONG, mbps=0.4)
    mixed.loc[[1, 2, 3], "down_mbps"] = [0.6, 0.49, 0.6]
    votes = classify_sessions(_Fixed(), mixed)["short_form_votes"].tolist()
    assert votes[:5] == [0, 1, 1, 2, 2]
    assert may_vote(30.0, 0.5) and not may_vote(29.9, 5.0) and not may_vote(60.0, 0.49)


def test_with_hindsight_a_young_sessions_windows_follow_its_first_older_one() -> None:
    """Windows ending 10 and 20 s into a session look like a long video's start-up
    (p_long 0.8); with hindsight they take the short-form of the window at 30 s, which
    the run after it leads into. Live, and in a session that turns out long-form, they
    keep their own label."""
    p_short = [0.1, 0.1, 0.6, 0.9, 0.9, 0.9, 0.9]
    p_long = [0.8, 0.8, 0.2, 0.05, 0.05, 0.05, 0.05]
    late = classify_sessions(_Fixed(), _windows(p_short, p_long, start=T0), hindsight=True)
    assert late["label"].tolist() == ["short-form"] * 7
    live = classify_sessions(_Fixed(), _windows(p_short, p_long, start=T0))
    assert live["label"].tolist()[:2] == ["long-form", "long-form"]
    # the same windows in a session that began a minute earlier are not young: no lead-in
    # reaches them (p_short 0.1)
    old = classify_sessions(_Fixed(), _windows(p_short, p_long), hindsight=True)
    assert old["label"].tolist()[:2] == ["long-form", "long-form"]
    long_run = classify_sessions(
        _Fixed(),
        _windows([0.9, 0.9, 0.1, 0.1, 0.1], [0.05, 0.05, 0.8, 0.8, 0.8], start=T0),
        hindsight=True,
    )
    assert "short-form" not in set(long_run["label"])


def test_timeline_shows_short_form_pending_as_its_own_span() -> None:
    spans = timeline(classify_sessions(_Fixed(), _windows(P_SHORT, P_LONG), hindsight=True))
    shown = spans.assign(pending=spans["pending"].fillna("-"))
    assert shown[["label", "pending", "short_form_votes"]].values.tolist() == [
        ["long-form", "-", 0],
        ["short-form", "-", 3],
        ["long-form", "-", 2],
        ["long-form", "short-form", 2],  # split from the long-form before it
    ]
    head, *rows = timeline_lines(spans)
    assert head == "client 10.77.1.2: short-form for 0.8 min"
    text = [r.split(" UTC  ")[1] for r in rows]
    assert text[2].startswith("long-form   p_short 0.10  net:10.77.9.0/24  (")
    want = "long-form (short-form likeliest, 2 of 3 windows needed)  p_short 0.90  net:"
    assert text[3].startswith(want)


def _lone(p_short: list[float], p_long: list[float], **kw: object) -> pd.DataFrame:
    """Windows of a second group of the client (another server network) beside
    :data:`P_SHORT`'s session, ending at the same times."""
    return _windows(p_short, p_long).assign(**kw)


def test_with_hindsight_video_beside_a_short_form_run_is_short_form() -> None:
    """A lone connection to another server network reads long-form (p_long 0.9) while the
    client's main group is in its short-form run (windows 2-6 with hindsight): with
    hindsight its windows inside the run are short-form, those after it are not. Live, for
    another client, for a named service, below the rate floor or for non-video it stays."""
    lone = [0.05] * 11
    video = [0.9] * 11
    main = _windows(P_SHORT, P_LONG)
    both = pd.concat([main, _lone(lone, video, group="net:10.77.8.0/24")], ignore_index=True)
    late = classify_sessions(_Fixed(), both, hindsight=True)
    beside = late[late["group"] == "net:10.77.8.0/24"]
    assert beside["label"].tolist() == ["long-form"] + ["short-form"] * 5 + ["long-form"] * 5
    assert beside["probability"].tolist()[1] == 0.05  # its own p_short: the label is hindsight's
    assert beside["reason"].iloc[1].endswith("; video while net:10.77.9.0/24 was short-form")
    assert late[late["group"] == "net:10.77.9.0/24"]["label"].tolist()[1:6] == ["short-form"] * 5
    spans = timeline(late)
    assert timeline_lines(spans)[0] == "client 10.77.1.2: short-form for 0.8 min"  # not 1.7
    live = classify_sessions(_Fixed(), both)
    assert "short-form" not in set(live["label"][live.index >= 11])
    for kw in (
        {"group": "net:10.77.8.0/24", "client": "10.77.1.3"},
        {"group": "netflix"},  # a named long-form service keeps its label
        {"group": "net:10.77.8.0/24", "down_mbps": 0.4},
    ):
        other = pd.concat([main, _lone(lone, video, **kw)], ignore_index=True)
        judged = classify_sessions(_Fixed(), other, hindsight=True)
        assert "short-form" not in set(judged["label"][judged.index >= 11]), kw
    quiet = pd.concat([main, _lone(lone, [0.1] * 11, group="net:10.77.8.0/24")], ignore_index=True)
    judged = classify_sessions(_Fixed(), quiet, hindsight=True)
    assert set(judged["label"][judged.index >= 11]) == {"other"}
