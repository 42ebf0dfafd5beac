"""The session model: a verdict per (client, group, window) of the session view.

It sits beside the per-flow model in a model directory: ``session.joblib`` (a
scikit-learn estimator over :data:`classifier.features.session.SESSION_FEATURES`) and
``session.json`` (its sha256, feature list, labels, the session-view settings it was
trained with, and its figures). As with the flow model, the sha256 and the feature list are
checked before anything is unpickled: loading a pickle runs code, so load only models you
trust.

:func:`agreed` is the one rule that turns a session's window probabilities into a
short-form verdict, offline and live alike: at least ``k`` of its last ``n`` windows reach
``threshold`` (:class:`Agreement`; live mode takes the values from the policy's
``[agreement]``, whose defaults these are). One window alone never blocks, and a window
of a session younger than :data:`MIN_VOTE_AGE`, or slower than :data:`MIN_VOTE_MBPS`, does
not vote (:func:`may_vote`). Other windows
are long-form when ``p_long >= p_other``, else other; where short-form is still the
likeliest of the three there, short-form is *pending* (:func:`pending`, shown with
:func:`pending_text`: the label stays, so what is blocked does not change). The reason text
says which session figures drove the window's probability.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from classifier.errors import ModelError
from classifier.features.session import SESSION_FEATURES, SessionConfig
from classifier.model.artifact import file_sha256
from classifier.model.name_prior import LONG, OTHER, SHORT, name_prior
from classifier.names.services import UNKNOWN, category_for

if TYPE_CHECKING:  # imported where a table is made: live mode judges without pandas
    import pandas as pd

__all__ = [
    "SHORT",
    "LONG",
    "OTHER",
    "Agreement",
    "MIN_VOTE_AGE",
    "MIN_VOTE_MBPS",
    "may_vote",
    "SessionModel",
    "SessionModelInfo",
    "agreed",
    "short_form_votes",
    "verdicts",
    "pending",
    "pending_text",
    "load_session_model",
    "save_session_model",
    "classify_sessions",
    "has_session_model",
    "window_probabilities",
    "session_reason",
]

_JOBLIB = "session.joblib"
_JSON = "session.json"


@dataclass(frozen=True)
class Agreement:
    """Short-form when at least ``k`` of a session's last ``n`` windows reach
    ``threshold`` (the policy's ``[agreement]`` defaults)."""

    k: int = 3
    n: int = 5
    threshold: float = 0.8


@dataclass(frozen=True)
class SessionModelInfo:
    """What ``session.json`` says about a session model."""

    name: str
    sha256: str
    feature_columns: list[str]
    labels: list[str]
    config: dict[str, Any]
    estimator: str = ""
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionModel:
    """A verified session model."""

    estimator: Any
    info: SessionModelInfo
    path: Path

    @property
    def config(self) -> SessionConfig:
        return SessionConfig(**self.info.config)


def save_session_model(
    estimator: Any,
    directory: Path,
    *,
    name: str,
    config: SessionConfig,
    estimator_name: str = "",
    created: str = "",
    metrics: dict[str, Any] | None = None,
) -> SessionModelInfo:
    """Write ``session.joblib`` and ``session.json`` into ``directory``, plus the lean
    export ``session-lean.npz`` (:mod:`classifier.model.lean`) when the estimator has the
    supported shape (a stale one is removed otherwise)."""
    import joblib

    from classifier.model.lean import write_session_export

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _JOBLIB
    joblib.dump(estimator, path, compress=3)
    info = SessionModelInfo(
        name=name,
        sha256=file_sha256(path),
        feature_columns=list(SESSION_FEATURES),
        labels=[str(c) for c in estimator.classes_],
        config=asdict(config),
        estimator=estimator_name,
        created=created,
        metrics=metrics or {},
    )
    (directory / _JSON).write_text(json.dumps(asdict(info), indent=2, sort_keys=True) + "\n")
    write_session_export(estimator, directory, info.sha256)
    return info


def has_session_model(directory: Path) -> bool:
    """Whether ``directory`` holds a session model (``session.json``)."""
    return (Path(directory) / _JSON).is_file()


def load_session_model(directory: Path | str) -> SessionModel:
    """Load and verify the session model in ``directory``. Raises :class:`ModelError` when
    a file is missing or unreadable, the sha256 differs, or the features differ from this
    shortflow's session view."""
    directory = Path(directory)
    sidecar = directory / _JSON
    try:
        raw = json.loads(sidecar.read_text())
        info = SessionModelInfo(**raw)
    except FileNotFoundError as exc:
        raise ModelError(
            f"{sidecar}: missing; this model has no session model "
            "(train one with `shortflow train-sessions`)"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{sidecar}: not a shortflow session.json ({exc})") from exc
    path = directory / _JOBLIB
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    if file_sha256(path) != info.sha256:
        raise ModelError(
            f"{path}: sha256 does not match session.json; refusing to unpickle a changed model file"
        )
    if list(info.feature_columns) != list(SESSION_FEATURES):
        raise ModelError(f"{directory}: session model built for other session features; retrain it")
    import joblib

    try:
        estimator = joblib.load(path)
        SessionConfig(**info.config)
    except Exception as exc:  # a verified file that still fails to load
        raise ModelError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from exc
    return SessionModel(estimator, info, directory)


#: with hindsight, a window directly before a short-form one is short-form too when the
#: model found short-form more likely than not there
LEAD_IN = 0.5


MIN_VOTE_AGE = 30.0
"""Seconds a session must have lived (a window's end minus ``session_start``) before its
windows vote short-form: in its first seconds a long video's start-up fill (one new
connection, one large download) looks like a clip."""


MIN_VOTE_MBPS = 0.5
"""Mbit/s down (a window's ``down_mbps``) below which a window does not vote short-form.
Someone scrolling clips pulls at least the videos' bitrate; the simulated Shorts players
fetch video of 0.4-4 Mbit/s, and 1 % of their windows average less than 0.61 Mbit/s. A
slower window is a page, a photo feed or a trickle of downloads, whatever its shape."""


def may_vote(age: float, down_mbps: float) -> bool:
    """Whether a window may vote short-form: its session is :data:`MIN_VOTE_AGE` seconds
    old (``age``) and it moved at least :data:`MIN_VOTE_MBPS` down."""
    return age >= MIN_VOTE_AGE and down_mbps >= MIN_VOTE_MBPS


def short_form_votes(
    p_short: pd.Series,
    keys: pd.DataFrame,
    rule: Agreement,
    age: pd.Series | None = None,
    rate: pd.Series | None = None,
) -> pd.Series:
    """Per row: how many of the session's last ``rule.n`` windows up to this one reach
    ``rule.threshold`` (short-form needs ``rule.k``); with ``age`` (seconds since the
    session began, per row), windows younger than :data:`MIN_VOTE_AGE` do not count, and
    with ``rate`` (each window's Mbit/s down), windows slower than :data:`MIN_VOTE_MBPS`.
    Rows must be in time order within a session; ``keys`` holds the columns naming a
    session."""
    hits = _fast(p_short >= rule.threshold, rate)
    if age is not None:
        hits = hits & (age >= MIN_VOTE_AGE)
    hits = hits.astype(int)
    by = [keys[c] for c in keys.columns]
    return hits.groupby(by, sort=False).transform(
        lambda s: s.rolling(rule.n, min_periods=1).sum().astype(int)
    )


def _fast(hits: pd.Series, rate: pd.Series | None) -> pd.Series:
    """``hits`` where the window moved at least :data:`MIN_VOTE_MBPS` (all of them
    without ``rate``)."""
    return hits if rate is None else hits & (rate >= MIN_VOTE_MBPS)


def agreed(
    p_short: pd.Series,
    keys: pd.DataFrame,
    rule: Agreement,
    *,
    hindsight: bool = False,
    age: pd.Series | None = None,
    rate: pd.Series | None = None,
    votes: pd.Series | None = None,
) -> pd.Series:
    """Per row: whether ``rule`` holds over the session's windows up to this one (votes as
    :func:`short_form_votes` counts them, with ``age`` and ``rate``; ``votes``: those
    counts, where the caller has them already). Rows must be in time order within a
    session; ``keys`` holds the columns naming a session.

    ``hindsight`` (a capture judged after the fact, never live): the windows that led to
    a short-form run are part of it: a window that reached the threshold counts when the
    rule comes to hold within the next ``n - 1`` windows, and so does each window directly
    before a short-form one whose ``p_short`` is at least :data:`LEAD_IN` (with ``rate``,
    only windows of at least :data:`MIN_VOTE_MBPS`); with ``age``, a session's windows
    younger than :data:`MIN_VOTE_AGE` follow its first older one."""
    import pandas as pd

    if votes is None:
        votes = short_form_votes(p_short, keys, rule, age, rate)
    now = votes >= rule.k
    if not hindsight:
        return now
    hits = _fast(p_short >= rule.threshold, rate)
    by = [keys[c] for c in keys.columns]
    soon = (
        now.astype(float)
        .groupby(by, sort=False)
        .transform(lambda s: s[::-1].rolling(rule.n, min_periods=1).max()[::-1])
    )
    short = (now | (hits & (soon > 0))).to_numpy(copy=True)
    likely = _fast(p_short >= LEAD_IN, rate).to_numpy()
    session = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    next_short: dict[int, bool] = {}  # per session: is the window after this one short-form
    for i in range(len(short) - 1, -1, -1):
        if not short[i] and likely[i] and next_short.get(session[i], False):
            short[i] = True
        next_short[session[i]] = bool(short[i])
    if age is not None:
        _young_follow(short, session, (age < MIN_VOTE_AGE).to_numpy())
    return pd.Series(short, index=p_short.index)


def _young_follow(
    short: npt.NDArray[np.bool_], session: npt.NDArray[np.int64], young: npt.NDArray[np.bool_]
) -> None:
    """With hindsight: the windows of a session's first :data:`MIN_VOTE_AGE` seconds are
    short-form when the session's first older window is (in place; rows in time order
    within a session). Those windows cannot tell a clip from a long video's start-up, so
    they follow what the session turned out to be."""
    first_old: dict[int, bool] = {}  # per session: its earliest window past the young age
    for i in range(len(short) - 1, -1, -1):
        if not young[i]:
            first_old[session[i]] = bool(short[i])
        elif first_old.get(session[i], False):
            short[i] = True


def _short_runs(
    clients: npt.NDArray[Any], groups: npt.NDArray[Any], short: npt.NDArray[np.bool_]
) -> list[tuple[int, int]]:
    """First and last row of each run of short-form windows of one (client, group); rows
    as :func:`classify_sessions` sorts them."""
    runs: list[tuple[int, int]] = []
    for i in np.flatnonzero(short):
        last = runs[-1][1] if runs else -2
        if last == i - 1 and clients[i] == clients[last] and groups[i] == groups[last]:
            runs[-1] = (runs[-1][0], int(i))
        else:
            runs.append((int(i), int(i)))
    return runs


def _beside_short_runs(
    out: pd.DataFrame,
    short: npt.NDArray[np.bool_],
    p_short: npt.NDArray[np.float64],
    p_long: npt.NDArray[np.float64],
) -> npt.NDArray[np.object_]:
    """With hindsight, per row: the group of another session of the same client that is
    in a short-form run when this window ends, where this window is video-like (long-form
    likelier than other, at least :data:`MIN_VOTE_MBPS` down) in a group judged by its
    shape alone (no name, or a name no rule knows); else None. Such a window is
    short-form: a person watches one video at a time, and without names a Shorts
    player's clips come from many server networks (each video has its own cache
    server), so a lone connection to one of them reads like a long video. Rows as
    :func:`classify_sessions` sorts them, ``short`` the agreed verdicts."""
    ends = out["window_end"].to_numpy(float)
    clients = out["client"].to_numpy()
    groups = out["group"].astype(str).to_numpy()
    runs: dict[Any, list[tuple[str, float, float]]] = {}
    for first, last in _short_runs(clients, groups, short):
        runs.setdefault(clients[first], []).append((groups[first], ends[first], ends[last]))
    rate = out["down_mbps"].to_numpy(float)
    video = ~short & (p_long >= 1.0 - p_short - p_long) & (rate >= MIN_VOTE_MBPS)
    beside = np.full(len(short), None, dtype=object)
    for k in np.flatnonzero(video):
        if category_for(groups[k]) != UNKNOWN:
            continue
        beside[k] = next(
            (g for g, a, b in runs.get(clients[k], ()) if g != groups[k] and a <= ends[k] <= b),
            None,
        )
    return beside


def verdicts(
    short: npt.NDArray[np.bool_], p_short: npt.NDArray[np.float64], p_long: npt.NDArray[np.float64]
) -> npt.NDArray[np.object_]:
    """Labels: short-form where ``short``, else long-form when ``p_long >= p_other``,
    else other."""
    p_other = 1.0 - p_short - p_long
    out = np.where(p_long >= p_other, LONG, OTHER).astype(object)
    out[short] = SHORT
    return out


def pending(
    labels: npt.NDArray[np.object_],
    p_short: npt.NDArray[np.float64],
    p_long: npt.NDArray[np.float64],
) -> npt.NDArray[np.object_]:
    """Short-form where it is the likeliest of the three labels but the label (of
    :func:`verdicts`) is not short-form: the agreement does not hold (yet); else None."""
    likeliest = p_short > np.maximum(p_long, 1.0 - p_short - p_long)
    out = np.full(len(labels), None, dtype=object)
    out[likeliest & (labels != SHORT)] = SHORT
    return out


def pending_text(votes: int, needed: int) -> str:
    """What a verdict with short-form pending adds to its label, in words:
    ``short-form likeliest, 2 of 3 windows needed``."""
    return f"short-form likeliest, {votes} of {needed} windows needed"


def window_probabilities(
    estimator: Any, rows: pd.DataFrame | Sequence[Mapping[str, Any]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``p_short`` and ``p_long`` of each session row (a session table, or a list of
    rows as :func:`classifier.features.session.window_records` gives them). A group
    named for a service gets what its category rules out
    (:func:`classifier.model.name_prior.name_prior`): no short-form for a call, music or
    a search page; no long-form on a platform whose video is short clips only (its
    video-like windows count as short-form) or on a service that is not video."""
    from classifier.model.lean import LeanSession

    if isinstance(rows, Sequence):  # rows as dicts: live mode, no pandas with a lean model
        groups = [str(r["group"]) for r in rows]
        matrix = np.array(
            [[float(r[c]) for c in SESSION_FEATURES] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(SESSION_FEATURES))
        if isinstance(estimator, LeanSession):
            proba = estimator.predict_proba(matrix)
        else:  # a scikit-learn pipeline selects its columns by name
            import pandas as pd

            proba = estimator.predict_proba(pd.DataFrame(matrix, columns=list(SESSION_FEATURES)))
    else:
        groups = [str(g) for g in rows["group"]]
        proba = estimator.predict_proba(rows[list(SESSION_FEATURES)])
    classes = [str(c) for c in estimator.classes_]
    proba = name_prior(proba, classes, [category_for(g) for g in groups]).proba

    def col(label: str) -> npt.NDArray[np.float64]:
        return proba[:, classes.index(label)] if label in classes else np.zeros(len(rows))

    return col(SHORT), col(LONG)


def session_reason(row: Any) -> str:
    """The session figures behind a window's probability, in words."""
    return (
        f"{row['media_flows']:.0f} media conn ({row['new_media_flows']:.0f} new), "
        f"{row['bursts']:.0f} bursts of {row['burst_mb_median']:.1f} MB, "
        f"gap cv {row['burst_gap_cv']:.2f}, {row['down_mbps']:.1f} Mbit/s"
    )


_VERDICT_COLUMNS: dict[str, type] = {
    "p_short": float,
    "p_long": float,
    "label": object,
    "pending": object,
    "short_form_votes": int,
    "short_form_needed": int,
    "probability": float,
    "reason": object,
}
"""The columns :func:`classify_sessions` adds, with their types."""


def classify_sessions(
    estimator: Any,
    sessions: pd.DataFrame,
    rule: Agreement | None = None,
    *,
    hindsight: bool = False,
) -> pd.DataFrame:
    """``sessions`` (a session table) sorted by (client, group, window end), with
    ``p_short``, ``p_long`` (of each window, from ``estimator``, a session model's
    ``SessionModel.estimator``), ``label`` (:func:`agreed` with ``rule``, by
    default :class:`Agreement`'s, and ``hindsight``; with hindsight also
    :func:`_beside_short_runs`), ``probability`` (the window's own probability of its
    label, also where hindsight gave it),
    ``pending`` (:func:`pending`), ``short_form_votes`` (:func:`short_form_votes`),
    ``short_form_needed`` (the rule's ``k``) and ``reason``."""
    import pandas as pd

    rule = rule or Agreement()
    out = sessions.sort_values(["client", "group", "window_end"], kind="stable")
    if out.empty:
        for name, kind in _VERDICT_COLUMNS.items():
            out[name] = pd.Series(dtype=kind)
        return out
    p_short, p_long = window_probabilities(estimator, out)
    out["p_short"], out["p_long"] = p_short, p_long
    keys = out[["client", "group"]]
    age, rate = out["window_end"] - out["session_start"], out["down_mbps"]
    votes = short_form_votes(out["p_short"], keys, rule, age, rate)
    short = agreed(
        out["p_short"], keys, rule, hindsight=hindsight, age=age, rate=rate, votes=votes
    ).to_numpy()
    beside = (
        _beside_short_runs(out, short, p_short, p_long)
        if hindsight
        else np.full(len(out), None, dtype=object)
    )
    near = beside.astype(bool)
    out["label"] = verdicts(short | near, p_short, p_long)
    out["pending"] = pending(out["label"].to_numpy(), p_short, p_long)
    out["short_form_votes"] = votes
    out["short_form_needed"] = rule.k
    out["probability"] = np.select(
        [out["label"] == SHORT, out["label"] == LONG],
        [out["p_short"], out["p_long"]],
        1.0 - p_short - p_long,
    )
    out["reason"] = out.apply(session_reason, axis=1)
    if near.any():
        out.loc[near, "reason"] = [
            f"{why}; video while {group} was short-form"
            for why, group in zip(out.loc[near, "reason"], beside[near], strict=True)
        ]
    return out
