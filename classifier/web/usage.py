"""Per-client usage: seconds of short-form, long-form and other activity per hour.

:class:`UsageLog` is fed by the live router's session verdicts (every judged window, about
every 10 s per (client, service)): each verdict counts the seconds since the previous
verdict of the same (client, service) into the (client, hour, label) bucket of its
time. A client doing two things of one label at once (two short-form services) counts the
seconds once. Memory is bounded: ``keep_days`` of hourly buckets (8 by default) for at
most ``max_clients`` clients (the one seen longest ago is dropped first).

:meth:`UsageLog.save` writes a small JSON file (atomically); :meth:`UsageLog.load` reads
it back, so a restart keeps the week's figures. A log loaded from a file also saves itself
there every ``autosave`` seconds (10 minutes) as verdicts come in, so a crash or power cut
loses at most that much.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["UsageLog", "KINDS", "kind_of", "USAGE_FILE"]

log = logging.getLogger(__name__)

KINDS = ("short", "long", "other")
USAGE_FILE = "shortflow-usage.json"
_HOUR = 3600
_KIND = {"short-form": 0, "long-form": 1}


def kind_of(label: object) -> int:
    """Index in :data:`KINDS` of a session label (short-form, long-form, anything else)."""
    return _KIND.get(label, 2) if isinstance(label, str) else 2


class UsageLog:
    """Hourly seconds per client and kind; thread-safe.

    ``step``: the seconds one verdict counts when it is the first of its (client, service)
    or follows a gap; ``max_gap``: a longer gap than this between two verdicts counts as
    ``step`` (the client was idle or the router was not judging, not watching).
    """

    def __init__(
        self,
        *,
        keep_days: int = 8,
        max_clients: int = 1024,
        step: float = 10.0,
        max_gap: float = 30.0,
        autosave: float = 600.0,
    ) -> None:
        if keep_days < 1 or max_clients < 1 or step <= 0 or max_gap < step:
            raise ValueError("keep_days, max_clients, step must be positive, max_gap >= step")
        self.keep_days = keep_days
        self.max_clients = max_clients
        self.step = step
        self.max_gap = max_gap
        self.autosave = autosave
        self.path: Path | None = None  # set by load(): where autosave writes
        self._saved_at: float | None = None
        self._lock = threading.Lock()
        # client -> hour start (epoch s) -> [short, long, other] seconds
        self._hours: dict[str, dict[int, list[float]]] = {}
        self._seen: dict[str, float] = {}  # client -> last verdict time (eviction order)
        self._last: dict[tuple[str, str], float] = {}  # (client, service) -> last verdict
        self._counted: dict[tuple[str, int], float] = {}  # (client, kind) -> counted at

    # -- feeding ---------------------------------------------------------------------------

    def observe(self, client: str, group: str, verdict: Mapping[str, Any], now: float) -> None:
        """One session verdict of ``client`` on ``group`` at ``now`` (epoch seconds)."""
        kind = kind_of(verdict.get("label"))
        with self._lock:
            prev = self._last.get((client, group))
            self._last[(client, group)] = now
            gap = now - prev if prev is not None else None
            seconds = gap if gap is not None and 0 < gap <= self.max_gap else self.step
            counted = self._counted.get((client, kind))
            if counted is not None and abs(now - counted) < 1.0:
                return  # this client's other service of the same kind counted this step
            self._counted[(client, kind)] = now
            self._add(client, kind, now, seconds)
            due = self.path is not None and (
                self._saved_at is None or now - self._saved_at >= self.autosave
            )
            if due:
                self._saved_at = now
        if due and self.path is not None:
            try:
                self.save(self.path)
            except OSError as exc:
                log.warning("usage not saved to %s: %s", self.path, exc.strerror)

    def add(self, client: str, kind: int, at: float, seconds: float) -> None:
        """Count ``seconds`` of ``kind`` (index in KINDS) for ``client`` ending at ``at``."""
        if kind not in (0, 1, 2) or not seconds >= 0 or not math.isfinite(at):
            raise ValueError("kind must be 0, 1 or 2, seconds >= 0 and the time finite")
        with self._lock:
            self._add(client, kind, at, seconds)

    def _add(self, client: str, kind: int, at: float, seconds: float) -> None:
        # seconds ending at ``at`` may straddle an hour: split them
        end = at
        while seconds > 0:
            hour = int(end // _HOUR) * _HOUR
            if hour >= end:  # ends exactly on the hour: the seconds are the hour before
                hour -= _HOUR
            part = min(seconds, end - hour)
            self._hours.setdefault(client, {}).setdefault(hour, [0.0, 0.0, 0.0])[kind] += part
            seconds -= part
            end = hour
        self._seen[client] = max(self._seen.get(client, at), at)
        self._trim(at)

    def _trim(self, now: float) -> None:
        oldest = int(now // _HOUR) * _HOUR - self.keep_days * 24 * _HOUR
        while len(self._hours) > self.max_clients:
            gone = min(self._seen, key=self._seen.__getitem__)
            self._forget(gone)
        for client in list(self._hours):
            hours = self._hours[client]
            if hours and min(hours) < oldest:
                for h in [h for h in hours if h < oldest]:
                    del hours[h]
            if not hours:
                self._forget(client)
        if len(self._last) > 4 * self.max_clients * 8:
            cutoff = now - self.max_gap
            for key in [k for k, t in self._last.items() if t < cutoff]:
                del self._last[key]
            for ck in [k for k, t in self._counted.items() if t < cutoff]:
                del self._counted[ck]

    def _forget(self, client: str) -> None:
        self._hours.pop(client, None)
        self._seen.pop(client, None)
        for key in [k for k in self._last if k[0] == client]:
            del self._last[key]
        for ck in [k for k in self._counted if k[0] == client]:
            del self._counted[ck]

    # -- reading ---------------------------------------------------------------------------

    def clients(self) -> list[str]:
        """Clients with usage, most recently seen first."""
        with self._lock:
            return sorted(self._seen, key=self._seen.__getitem__, reverse=True)

    def total(self, client: str, since: float, until: float | None = None) -> list[float]:
        """Seconds of each kind in the hours that start at or after ``since`` (hour
        granularity: ``since`` is rounded down to its hour) and before ``until``."""
        start = int(since // _HOUR) * _HOUR
        out = [0.0, 0.0, 0.0]
        with self._lock:
            for hour, secs in self._hours.get(client, {}).items():
                if hour >= start and (until is None or hour < until):
                    for i in range(3):
                        out[i] += secs[i]
        return out

    def last_hours(self, client: str, now: float, hours: int = 24) -> dict[str, list[float]]:
        """The last ``hours`` hours (the current one last) of ``client``: ``t`` (hour start,
        epoch s) and minutes of each kind, for a chart."""
        current = int(now // _HOUR) * _HOUR
        starts = [current - (hours - 1 - i) * _HOUR for i in range(hours)]
        with self._lock:
            got = self._hours.get(client, {})
            rows = [got.get(h, [0.0, 0.0, 0.0]) for h in starts]
            return {
                "t": [float(h) for h in starts],
                **{k: [round(r[i] / 60.0, 2) for r in rows] for i, k in enumerate(KINDS)},
            }

    @staticmethod
    def day_start(now: float) -> float:
        """Local midnight of the day of ``now``."""
        local = datetime.fromtimestamp(now).astimezone()
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    @staticmethod
    def week_start(now: float) -> float:
        """Local midnight of the Monday of the week of ``now``."""
        local = datetime.fromtimestamp(now).astimezone()
        monday = local - timedelta(days=local.weekday())
        return monday.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    # -- persistence -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": 1,
                "clients": {
                    c: {str(h): [round(v, 3) for v in s] for h, s in hours.items()}
                    for c, hours in self._hours.items()
                },
            }

    def save(self, path: str | Path) -> None:
        """Write the buckets to ``path`` atomically (a temp file renamed over it).

        Raises OSError when the directory is not writable.
        """
        p = Path(path)
        data = json.dumps(self.to_json(), separators=(",", ":"))
        fd, tmp = tempfile.mkstemp(prefix=".usage-", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, now: float | None = None, **kw: Any) -> UsageLog:
        """A log with the buckets saved in ``path``; an empty one when the file is missing
        or damaged (logged)."""
        usage = cls(**kw)
        p = Path(path)
        usage.path = p
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            clients = doc["clients"]
            for client, hours in clients.items():
                for hour, secs in hours.items():
                    h = int(hour)
                    for kind, value in enumerate(secs[:3]):
                        if float(value) > 0:
                            usage._hours.setdefault(str(client), {}).setdefault(h, [0.0, 0.0, 0.0])[
                                kind
                            ] += float(value)
                    usage._seen[str(client)] = max(usage._seen.get(str(client), 0.0), h)
        except FileNotFoundError:
            return usage
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("usage file %s not loaded, starting empty: %s", p, exc)
            fresh = cls(**kw)
            fresh.path = p
            return fresh
        with usage._lock:
            usage._trim(time.time() if now is None else now)
        return usage
