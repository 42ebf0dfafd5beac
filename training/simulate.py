"""Simulated player sessions at the session view's level: bytes per flow per second.

Real short-form traffic is scarce (one Shorts trace, one Reels trace), and the two differ
from each other more than from anything else. This module writes sessions from a simple
generative description of how players fetch, with randomised parameters, so that a model
learns the *mechanism* (clips fetched at swipe times over churning connections, vs. one
connection fetching on a steady clock after a start-up fill) rather than one recording:

* ``short-form``: clips watched for a heavy-tailed time (median ~10 s, 2-60 s); each clip
  is fetched in ranges of one size per session (0.5-4 MB) at link speed until a buffer goal
  (5-30 s per session) is ahead of the playhead, then not again until the buffer has
  drained to 50-90 % of the goal (the two watermarks of a player's buffer, as ExoPlayer's
  minimum and maximum buffer durations), and the next clip's start is prefetched; a
  connection carries one to four clips and is replaced. YouTube maps each video to its
  cache server by hashing the video's id (Adhikari et al., "Vivisecting YouTube", 2012),
  so a player moving from clip to clip moves between servers; apps that keep one
  connection for every clip (Instagram, TikTok) are told by their names, not by this
  shape.
* ``long-form``: a start-up fill of 10-60 s of video at link rate, then one segment every
  5-25 s (small jitter) on one long-lived connection, sometimes with a parallel audio
  connection, a reconnect, a seek (refill), and sometimes observed from the middle.
* ``other``: audio streaming (whole tracks every few minutes), calls (a constant rate),
  web browsing (page loads over several new connections), bulk downloads, live streams
  (a segment every 2-6 s), and idle background.

Every session also carries background flows (small fetches at random times) and fetches
over a link of its own (5-300 Mbit/s). Parameters are fixed ranges from how these players
are known to work, not fitted to any capture; the Shorts player's connection churn, range
fetching and buffer watermarks, and the link range, were set after seeing the real
sessions' figures (docs/experiments.md, "Simulated sessions"). The output is deterministic
for a seed. Rows have the columns of :data:`classifier.features.session.ACTIVITY_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["simulate", "SIM_KINDS"]

_MB = 1_000_000.0


@dataclass
class _Session:
    rng: np.random.Generator
    duration: int
    link: float  # bytes per second when fetching
    flows: list[dict[int, float]] = field(default_factory=list)  # per flow: second -> bytes
    opened: list[float] = field(default_factory=list)

    def new_flow(self, t: float) -> int:
        self.flows.append({})
        self.opened.append(t)
        return len(self.flows) - 1

    def fetch(self, flow: int, t: float, size: float, rate: float | None = None) -> float:
        """Put ``size`` bytes on ``flow`` from time ``t`` at ``rate``; return the end time."""
        rate = rate or self.link
        left, now = size, t
        while left > 0 and now < self.duration:
            sec = int(now)
            room = rate * (sec + 1 - now)
            part = min(left, room)
            self.flows[flow][sec] = self.flows[flow].get(sec, 0.0) + part
            left -= part
            now = sec + 1.0 if part == room else now + part / rate
        return now


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw between ``low`` and ``high`` whose logarithm is uniform."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _short(s: _Session) -> None:
    r = s.rng
    bitrate = r.uniform(0.4, 4.0) * _MB / 8  # bytes per second of video
    piece = _log_uniform(r, 0.5, 4.0) * _MB  # one range request
    goal = r.uniform(5, 30)  # seconds of video the player fills up to ahead of the playhead
    resume = goal * r.uniform(0.5, 0.9)  # ... and lets drain to this before it fetches again
    clips_per_conn = r.integers(1, 5)
    t, flow, used = r.uniform(0, 3), s.new_flow(0.0), 0
    while t < s.duration:
        if used >= clips_per_conn:
            flow, used = s.new_flow(t), 0
        clip_len = r.uniform(10, 60)
        watch = float(np.clip(r.lognormal(np.log(10), 0.8), 2, 60))
        have, now, filling = 0.0, t, True  # seconds of the clip fetched; the clock; fetching?
        while now < min(t + watch, s.duration) and have < clip_len:
            ahead = have - (now - t)
            filling = ahead < goal and (filling or ahead < resume)
            if filling:  # fetch the next range
                size = min(piece, (clip_len - have) * bitrate)
                end = s.fetch(flow, now, size)
                have += size / bitrate
                now = max(end, now + 0.2)
            else:
                now += 1.0
        if r.random() < 0.7:  # prefetch the start of the next clip
            s.fetch(flow, now + r.uniform(0.2, 3), min(piece, r.uniform(2, 6) * bitrate))
        used += 1
        t += watch + r.uniform(0.2, 1.5)


def _long(s: _Session) -> None:
    r = s.rng
    bitrate = r.uniform(0.3, 6.0) * _MB / 8
    period = r.uniform(5, 25)
    jitter = r.uniform(0.01, 0.2)
    start_mid = r.random() < 0.4
    flow = s.new_flow(0.0)
    audio = s.new_flow(0.0) if r.random() < 0.4 else None
    t = 0.0
    if not start_mid:
        t = s.fetch(flow, r.uniform(0, 2), r.uniform(10, 60) * bitrate)
    reconnect = r.uniform(60, 400) if r.random() < 0.3 else float("inf")
    while t < s.duration:
        t += period * (1 + r.normal(0, jitter))
        if t >= reconnect:
            flow, reconnect = s.new_flow(t), t + r.uniform(60, 400)
        if r.random() < 0.02:  # a seek: refill the buffer
            s.fetch(flow, t, r.uniform(10, 40) * bitrate)
        s.fetch(flow, t, period * bitrate * r.uniform(0.9, 1.1))
        if audio is not None:
            s.fetch(audio, t + r.uniform(0, 1), period * 16_000)


def _audio(s: _Session) -> None:
    r = s.rng
    flow, t = s.new_flow(0.0), r.uniform(0, 30)
    while t < s.duration:
        s.fetch(flow, t, r.uniform(2, 10) * _MB)
        t += r.uniform(120, 300)
        if r.random() < 0.3:
            flow = s.new_flow(t)


def _call(s: _Session) -> None:
    r = s.rng
    rate = r.uniform(0.3, 3.0) * _MB / 8
    flow = s.new_flow(0.0)
    for sec in range(s.duration):
        s.flows[flow][sec] = rate * r.uniform(0.6, 1.4)


def _web(s: _Session) -> None:
    r = s.rng
    t = r.uniform(0, 5)
    while t < s.duration:
        for _ in range(r.integers(2, 15)):
            f = s.new_flow(t)
            s.fetch(f, t + r.uniform(0, 2), r.lognormal(np.log(150_000), 1.2))
        t += r.lognormal(np.log(30), 0.9)


def _bulk(s: _Session) -> None:
    r = s.rng
    t = r.uniform(0, 60)
    while t < s.duration:
        f = s.new_flow(t)
        t = s.fetch(f, t, r.uniform(5, 200) * _MB, s.link * r.uniform(0.2, 1.0))
        t += r.uniform(10, 300)


def _live(s: _Session) -> None:
    r = s.rng
    bitrate, period = r.uniform(1, 6) * _MB / 8, r.uniform(2, 6)
    flow, t = s.new_flow(0.0), 0.0
    while t < s.duration:
        s.fetch(flow, t, bitrate * period * r.uniform(0.8, 1.2))
        t += period * (1 + r.normal(0, 0.05))


def _idle(s: _Session) -> None:
    return None


_KINDS: dict[str, tuple[str, Callable[[_Session], None]]] = {
    "shorts": ("short-form", _short),
    "long": ("long-form", _long),
    "audio": ("other", _audio),
    "call": ("other", _call),
    "web": ("other", _web),
    "bulk": ("other", _bulk),
    "live": ("other", _live),
    "idle": ("other", _idle),
}
SIM_KINDS = tuple(_KINDS)


def _background(s: _Session) -> None:
    r = s.rng
    t = r.uniform(0, 20)
    while t < s.duration:
        f = s.new_flow(t)
        s.fetch(f, t, r.lognormal(np.log(20_000), 1.0))
        t += r.exponential(15)


def _rows(s: _Session, t0: float, capture: str) -> pd.DataFrame:
    recs = []
    for fid, (flow, opened) in enumerate(zip(s.flows, s.opened, strict=True)):
        if not flow:
            continue
        first = min(opened, min(flow))
        for sec, nbytes in flow.items():
            recs.append((fid, t0 + first, sec - first, nbytes))
    frame = pd.DataFrame(recs, columns=["flow_id", "first_ts", "window_start", "bytes_down"])
    frame.insert(0, "client", "10.77.0.2")
    frame.insert(1, "server", "10.77.1.1")
    frame.insert(2, "service", "unknown")
    frame.insert(3, "category", "unknown")
    frame["capture"] = capture
    return frame


def _link(rng: np.random.Generator) -> float:
    """A session's link, bytes per second: log-uniform from 5 to 300 Mbit/s, which covers
    countries' median fixed broadband downloads (Ookla Speedtest Global Index, 2024: from
    about 10 Mbit/s to over 300, the global median about 94; mobile about 56)."""
    return _log_uniform(rng, 5, 300) * _MB / 8


def simulate(kind: str, seed: int, duration: int | None = None) -> tuple[str, pd.DataFrame]:
    """One simulated session of ``kind`` (one of :data:`SIM_KINDS`): its label and its
    per-(flow, second) rows. Deterministic for (kind, seed)."""
    label, player = _KINDS[kind]
    rng = np.random.default_rng([seed, SIM_KINDS.index(kind)])
    dur = duration or int(rng.uniform(60, 600))
    s = _Session(rng, dur, _link(rng))
    player(s)
    _background(s)
    return label, _rows(s, 1_700_000_000.0 + seed * 10_000, f"sim-{kind}-{seed}")
