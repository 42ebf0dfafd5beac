"""What live mode says in its log: verdict changes, blocks and their end, and a summary.

:class:`VerdictLog` remembers per (client, group) the label and the action it last
reported, the recent short-form probabilities (the session's label comes from the policy's
``[agreement]`` over them), and the blocks made for it. :meth:`VerdictLog.report` logs one
line when the label or the action changes, none while they stay the same, so a session
judged every 10 s for an hour gives a line when it turns, not 360::

    verdict 10.77.1.2 youtube (rr3---sn-x.googlevideo.com): long-form -> short-form
    p=0.91 window 60 s; action: would block (dry-run); 4 media conn (2 new), ...

(one line in the log). A label with short-form pending says so after its probability:
``other -> long-form p=0.30 (short-form likeliest, 2 of 3 windows needed) window 60 s``.
:meth:`VerdictLog.expired` logs one ``unblock`` line when the last block of a (client,
group) has run out or was lifted. :func:`summary_text` is the body of the ``summary`` line
live mode logs every few minutes and at exit.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from classifier.enforce.enforcer import BlockRecord
from classifier.enforce.policy import Policy
from classifier.model.session_model import LONG, OTHER, SHORT, pending, verdicts

__all__ = ["VerdictLog", "Report", "SessionLabel", "NO_LABEL", "action_of", "summary_text"]

log = logging.getLogger(__name__)

#: The label a (client, group) has before its first verdict, as the log shows it.
NO_LABEL = "-"
LABEL_ORDER = (SHORT, LONG, OTHER)


def action_of(records: Sequence[BlockRecord]) -> str:
    """``block``, ``would block (dry-run)`` or ``none``: what the records made now mean."""
    if not records:
        return "none"
    return "would block (dry-run)" if records[0].dry_run else "block"


class SessionLabel(NamedTuple):
    """A session's label after a window (:meth:`VerdictLog.session_label`)."""

    label: str
    probability: float
    """Probability of the label."""
    pending: str | None
    """Short-form when it is the likeliest label but not agreed (yet), else None."""
    votes: int
    """How many of the last windows reached the policy's threshold."""


class Report(NamedTuple):
    line: str | None
    """The line logged, or None when nothing changed."""
    new_blocks: int
    """Blocks among the records that were not known before (not renewals)."""


@dataclass(slots=True)
class _Session:
    label: str = NO_LABEL
    action: str = "none"
    pending: bool = False
    """Whether the last verdict had short-form pending (a ``note``)."""
    name: str | None = None
    votes: deque[float] = field(default_factory=deque)
    blocks: dict[str, tuple[float, bool]] = field(default_factory=dict)
    """Block id -> (expires, dry run) of the blocks in force for this (client, group)."""
    gone: list[tuple[bool, bool]] = field(default_factory=list)
    """(expired, dry run) of its blocks that went while others were still in force."""


def _who(client: str, group: str, name: str | None) -> str:
    return f"{client} {group} ({name})" if name and name != group else f"{client} {group}"


class VerdictLog:
    """Change-only log lines per (client, group). ``max_sessions`` bounds memory: beyond it
    the (client, group) reported longest ago is forgotten (a later verdict of it is then a
    change from ``-``). Not thread-safe: the live loop alone calls it."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple[str, str], _Session] = OrderedDict()
        self._blocked: dict[tuple[str, str], _Session] = {}

    def _get(self, client: str, group: str) -> _Session:
        key = (client, group)
        entry = self._sessions.pop(key, None)
        if entry is None:
            entry = _Session()
        self._sessions[key] = entry  # most recent last
        while len(self._sessions) > self.max_sessions:
            old, _ = self._sessions.popitem(last=False)
            self._blocked.pop(old, None)
        return entry

    def session_label(
        self,
        client: str,
        group: str,
        p_short: float,
        p_long: float,
        policy: Policy,
        *,
        vote: bool = True,
    ) -> SessionLabel:
        """The label of (client, group) after a window with these probabilities: short-form
        when the policy's agreement holds over its last windows (:meth:`Policy.agrees`,
        what the enforcer asks), else long-form or other as offline
        (:func:`classifier.model.session_model.verdicts`), with short-form pending where
        it is the likeliest (:func:`classifier.model.session_model.pending`). ``vote``
        false: the window counts as no vote (a session too young, or a window too slow:
        :func:`classifier.model.session_model.may_vote`)."""
        entry = self._get(client, group)
        if entry.votes.maxlen != policy.agreement_n:
            entry.votes = deque(entry.votes, maxlen=policy.agreement_n)
        entry.votes.append(float(p_short) if vote else 0.0)
        votes = policy.votes(entry.votes)
        ps, pl = np.array([p_short]), np.array([p_long])
        labels = verdicts(np.array([votes >= policy.agreement_k]), ps, pl)
        label, waiting = str(labels[0]), pending(labels, ps, pl)[0]
        probability = {SHORT: p_short, LONG: p_long}.get(label, 1.0 - p_short - p_long)
        return SessionLabel(label, float(probability), waiting, votes)

    def last(self, client: str, group: str) -> tuple[str, str] | None:
        """(label, action) last reported for (client, group), or None when unknown."""
        entry = self._sessions.get((client, group))
        return None if entry is None else (entry.label, entry.action)

    def report(
        self,
        client: str,
        group: str,
        *,
        label: str,
        probability: float,
        action: str,
        name: str | None = None,
        window: float | None = None,
        records: Sequence[BlockRecord] = (),
        reason: str | None = None,
        media: bool = True,
        note: str | None = None,
    ) -> Report:
        """Note a verdict of (client, group) and the action taken on it; log a ``verdict``
        line when the label, the action or whether short-form is pending (a ``note``)
        differs from the last one, with ``note`` in parentheses after the probability
        (:func:`classifier.model.session_model.pending_text`). The line is INFO when it
        matters to an operator (the session carries media, short-form comes or goes, or
        the action changes), DEBUG otherwise (a quiet nameless group turning from other to
        long-form)."""
        entry = self._get(client, group)
        new = 0
        for rec in records:
            new += rec.id not in entry.blocks
            entry.blocks[rec.id] = (rec.expires, rec.dry_run)
        if entry.blocks:
            self._blocked[(client, group)] = entry
        if name:
            entry.name = name
        pending = note is not None
        if entry.label == label and entry.action == action and entry.pending == pending:
            return Report(None, new)
        old_label, old_action = entry.label, entry.action
        entry.label, entry.action, entry.pending = label, action, pending
        line = f"verdict {_who(client, group, name)}: {old_label} -> {label} p={probability:.2f}"
        if note:
            line += f" ({note})"
        if window is not None and math.isfinite(window):
            line += f" window {window:g} s"
        line += f"; action: {action}"
        if isinstance(reason, str) and reason:
            line += f"; {reason}"
        loud = media or SHORT in (old_label, label) or old_action != action
        log.log(logging.INFO if loud else logging.DEBUG, "%s", line)
        return Report(line, new)

    def expired(self, active: Iterable[BlockRecord], now: float) -> list[str]:
        """Forget blocks no longer in ``active``; log (and return) one ``unblock`` line per
        (client, group) whose last block went, with how many went: ``expired`` when their
        time had come by ``now``, ``lifted`` when not (by hand, through the API)."""
        live = {r.id for r in active}
        lines: list[str] = []
        for key, entry in list(self._blocked.items()):
            gone = [i for i in entry.blocks if i not in live]
            if not gone:
                continue
            for i in gone:
                expires, dry_run = entry.blocks.pop(i)
                entry.gone.append((expires <= now, dry_run))
            if entry.blocks:
                continue  # other blocks of the session are still in force
            del self._blocked[key]
            ends, entry.gone = entry.gone, []
            expired = sum(e for e, _ in ends)
            how = (
                "expired"
                if expired == len(ends)
                else "lifted"
                if not expired
                else "expired or lifted"
            )
            count = f"{len(ends)} block{'s' if len(ends) > 1 else ''}"
            dry = " (dry-run)" if any(d for _, d in ends) else ""
            line = f"unblock {_who(key[0], key[1], entry.name)}: {count} {how}{dry}"
            entry.action = "none"  # a block made again later is a change
            log.info("%s", line)
            lines.append(line)
        return lines

    def __len__(self) -> int:
        return len(self._sessions)


def _by_label(counts: Mapping[str, int]) -> str:
    labels = [lab for lab in LABEL_ORDER if lab in counts]
    labels += sorted(lab for lab in counts if lab not in LABEL_ORDER)
    return ", ".join(f"{lab} {counts[lab]}" for lab in labels) or "none"


def summary_text(
    counters: Mapping[str, int],
    labels: Mapping[str, Mapping[str, int]],
    *,
    uptime: float,
    flows_open: int,
    sessions_open: int,
    blocks_active: int,
    mode: str,
) -> str:
    """One line of live mode's running totals, for example ``up 300 s; packets 81234
    (received 81240, dropped 0 = 0.00 %); flows open 42; sessions open 3, judged 90:
    short-form 6, long-form 80, other 4; flow verdicts 500: long-form 20, other 480; blocks
    active 2, made 3 (mode dry-run)``."""
    received = counters.get("received", 0)
    dropped = counters.get("drops", 0)
    loss = 100.0 * dropped / (received + dropped) if received + dropped else 0.0
    sessions = labels.get("session", {})
    flows = labels.get("flow", {})
    return (
        f"up {uptime:.0f} s; packets {counters.get('packets', 0)} (received {received}, "
        f"dropped {dropped} = {loss:.2f} %); flows open {flows_open}; "
        f"sessions open {sessions_open}, judged {counters.get('session_verdicts', 0)}: "
        f"{_by_label(sessions)}; flow verdicts {counters.get('verdicts', 0)}: "
        f"{_by_label(flows)}; blocks active {blocks_active}, made "
        f"{counters.get('blocks', 0)} (mode {mode})"
    )
