"""Scenarios and session plans: what an emulated user does, drawn from a seed.

:func:`plan_session` is a pure function: the same ``(scenario, seed, duration_s)`` always
gives the same :class:`SessionPlan` (clips, sizes, dwell times, pages, call rates...). The
player (:mod:`training.lab.players`) executes a plan in real time over real sockets; the
network decides how long each transfer takes. The distributions are approximations of
published measurements; ``datasets/lab/README.md`` says which and why.

Time is not compressed: a session is a 20-60 s slice of what a user does, played at real
speed, so burst spacing, dwell times and segment periods keep their real-world scale.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from classifier.errors import ShortflowError

__all__ = [
    "SCENARIOS",
    "LABELS",
    "SessionPlan",
    "ScenarioError",
    "plan_session",
    "LONGFORM_LADDER_BPS",
]


class ScenarioError(ShortflowError):
    """An unknown scenario name or an impossible plan parameter."""


SCENARIOS: dict[str, str] = {
    "shorts": "YouTube Shorts swipe session: 5-60 s clips from googlevideo fetched as a few "
    "range requests (HTTP/3 or HTTP/2), next clip prefetched, swipes abandon "
    "downloads",
    "reels": "Instagram Reels swipe session: 5-90 s clips from cdninstagram (HTTP/2 or "
    "HTTP/3), 1-3 clips prefetched, quick swipes",
    "tiktok": "TikTok For-You swipe session: 5-60 s clips from tiktokcdn (HTTP/2 or "
    "HTTP/1.1), a large first chunk and several clips prefetched",
    "longform": "YouTube long video: buffer fill, then ON/OFF 5 s segment fetches at a "
    "ladder bitrate, seeks and quality switches",
    "feed": "Instagram feed scrolling: photos, avatars, API pages and occasional in-feed "
    "clips that autoplay a few seconds",
    "web": "Web browsing: page loads (HTML + 8-40 subresources from 3 hosts), think time",
    "call": "Voice/video call: steady UDP both ways, 30-50 packets/s each way",
    "mixed": "One user switching between behaviours (e.g. long video -> Shorts on the same "
    "connection -> web); writes a ground-truth timeline",
}

LABELS: dict[str, str] = {
    "shorts": "short-form",
    "reels": "short-form",
    "tiktok": "short-form",
    "longform": "long-form",
    "feed": "other-video",
    "web": "web",
    "call": "call",
    "mixed": "mixed",
}

_APPS: dict[str, str] = {
    "shorts": "youtube",
    "reels": "instagram",
    "tiktok": "tiktok",
    "longform": "youtube",
    "feed": "instagram",
    "web": "web",
    "call": "call",
}

#: YouTube-like video ladder (bit/s): 240p, 360p, 480p, 720p, 1080p.
LONGFORM_LADDER_BPS: tuple[int, ...] = (300_000, 700_000, 1_200_000, 2_500_000, 4_500_000)
_AUDIO_BPS = 128_000


@dataclass(frozen=True)
class SessionPlan:
    """Everything the player needs to emulate one session (JSON-ready ``params``)."""

    scenario: str
    seed: int
    duration_s: float
    label: str
    app: str
    protocol: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize for the player process."""
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SessionPlan:
        """Inverse of :meth:`to_json`.

        Raises:
            ScenarioError: the text is not a plan.
        """
        try:
            d = json.loads(text)
            return cls(**d)
        except (ValueError, TypeError) as exc:
            raise ScenarioError(f"not a session plan: {exc}") from exc

    def summary(self) -> str:
        """One line describing the plan (for manifest notes)."""
        return _summary(self.scenario, self.protocol, self.params)


def _summary(scenario: str, protocol: str, p: dict[str, Any]) -> str:
    if scenario in ("shorts", "reels", "tiktok"):
        clips = p["clips"]
        dw = sorted(c["dwell_s"] for c in clips)
        return (
            f"{protocol} clips={len(clips)} dwell_median={dw[len(dw) // 2]:.1f}s "
            f"prefetch={p['prefetch_depth']}"
        )
    if scenario == "longform":
        return (
            f"{protocol} rung={p['rung']} fill={p['fill_target_s']:.0f}s mode={p['mode']} "
            f"seeks={len(p['seeks'])} switches={len(p['switches'])}"
        )
    if scenario == "feed":
        kinds = [e["kind"] for e in p["events"]]
        return f"{protocol} scrolls={kinds.count('images')} clips={kinds.count('clip')}"
    if scenario == "web":
        return f"{protocol} pages={len(p['pages'])}"
    if scenario == "call":
        return f"udp pps_up={p['pps_up']:.0f} pps_down={p['pps_down']:.0f}"
    if scenario == "mixed":
        segs = "+".join(f"{s['scenario']}({s['end'] - s['start']:.0f}s)" for s in p["segments"])
        return f"{protocol} {segs}"
    return protocol


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = sorted(weights)
    return rng.choices(keys, [weights[k] for k in keys])[0]


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, rng.lognormvariate(math.log(median), sigma)))


# -- swipe sessions ---------------------------------------------------------------------------
_SWIPE: dict[str, dict[str, Any]] = {
    "shorts": {
        "hosts": {
            "rr3---sn-lab.googlevideo.com": 0.6,
            "rr1---sn-lab.googlevideo.com": 0.25,
            "rr5---sn-lab.googlevideo.com": 0.15,
        },
        "api": "youtubei-lab.googleapis.com",
        "protocols": {"h3": 0.7, "h2": 0.3},
        "clip_median_s": 20.0,
        "clip_max_s": 60.0,
        "bitrates": {1_000_000: 0.3, 1_600_000: 0.45, 2_400_000: 0.25},
        "first_chunk": (800_000, 2_500_000),
        "chunk": (1_000_000, 2_000_000),
        "lookahead": (4.0, 8.0),
        "quick_swipe_p": 0.35,
        "dwell_median_s": 9.0,
        "prefetch": (1, 2),
        "range_in_query": True,
        "new_conn_p": 0.35,
    },
    "reels": {
        "hosts": {"scontent-lab.cdninstagram.com": 0.7, "scontent-lab2.cdninstagram.com": 0.3},
        "api": "i-lab.instagram.com",
        "protocols": {"h2": 0.75, "h3": 0.25},
        "clip_median_s": 16.0,
        "clip_max_s": 90.0,
        "bitrates": {800_000: 0.35, 1_300_000: 0.45, 2_000_000: 0.2},
        "first_chunk": (250_000, 600_000),
        "chunk": (500_000, 1_200_000),
        "quick_swipe_p": 0.3,
        "dwell_median_s": 8.0,
        "prefetch": (1, 3),
        "range_in_query": False,
    },
    "tiktok": {
        "hosts": {"v16-lab.tiktokcdn.com": 0.6, "v19-lab.tiktokcdn.com": 0.4},
        "api": "api-lab.tiktokv.com",
        "protocols": {"h2": 0.7, "h1": 0.3},
        "clip_median_s": 15.0,
        "clip_max_s": 60.0,
        "bitrates": {700_000: 0.3, 1_100_000: 0.5, 1_600_000: 0.2},
        "first_chunk": (600_000, 1_100_000),
        "chunk": (800_000, 1_600_000),
        "quick_swipe_p": 0.3,
        "dwell_median_s": 10.0,
        "prefetch": (1, 3),
        "range_in_query": False,
    },
}


def _plan_swipe(
    kind: str, rng: random.Random, duration: float, protocol: str | None
) -> tuple[str, dict[str, Any]]:
    spec = _SWIPE[kind]
    proto = protocol or _pick(rng, spec["protocols"])
    depth = rng.randint(*spec["prefetch"])
    main_host = rng.choices(
        sorted(spec["hosts"]), [spec["hosts"][h] for h in sorted(spec["hosts"])]
    )[0]
    clips: list[dict[str, Any]] = []
    total_dwell = 0.0
    rates = sorted(spec["bitrates"])
    renew = spec.get("new_conn_p", 0.0)
    while total_dwell < duration + 5.0 or len(clips) < depth + 2:
        length = round(_lognormal(rng, spec["clip_median_s"], 0.55, 5.0, spec["clip_max_s"]), 2)
        bps = rng.choices(rates, [spec["bitrates"][r] for r in rates])[0]
        size = int(length * (bps + _AUDIO_BPS) / 8)
        first = min(size, rng.randint(*spec["first_chunk"]))
        chunks = [[0, first - 1]]
        pos = first
        while pos < size:
            n = min(size - pos, rng.randint(*spec["chunk"]))
            chunks.append([pos, pos + n - 1])
            pos += n
        if rng.random() < spec["quick_swipe_p"]:
            dwell = rng.uniform(0.8, 3.0)
        else:
            dwell = _lognormal(rng, spec["dwell_median_s"], 0.6, 2.0, 120.0)
            loops = 2.0 if rng.random() < 0.12 else 1.0
            dwell = min(dwell, length * loops)
        host = main_host if rng.random() < 0.7 else rng.choice(sorted(spec["hosts"]))
        clips.append(
            {
                "id": f"{kind}-{rng.getrandbits(48):012x}",
                "host": host,
                "new_conn": bool(renew) and rng.random() < renew,
                "length_s": round(length, 2),
                "bitrate_bps": bps,
                "size": size,
                "chunks": chunks,
                "dwell_s": round(dwell, 2),
            }
        )
        total_dwell += dwell
    return proto, {
        "clips": clips,
        "prefetch_depth": depth,
        "lookahead_s": round(rng.uniform(*spec.get("lookahead", (8.0, 15.0))), 1),
        "api_host": spec["api"],
        "api_every": rng.randint(3, 6),
        "api_size": (rng.randint(4_000, 40_000)),
        "range_in_query": spec["range_in_query"],
    }


# -- long-form --------------------------------------------------------------------------------
def _plan_longform(
    rng: random.Random, duration: float, protocol: str | None
) -> tuple[str, dict[str, Any]]:
    proto = protocol or _pick(rng, {"h3": 0.7, "h2": 0.3})
    rung = rng.choices(range(len(LONGFORM_LADDER_BPS)), [0.05, 0.15, 0.3, 0.35, 0.15])[0]
    switches: list[list[float]] = []
    seeks: list[float] = []
    if rng.random() < 0.35 and duration > 15:
        new = min(len(LONGFORM_LADDER_BPS) - 1, max(0, rung + rng.choice((-1, 1))))
        switches.append([round(rng.uniform(8, duration - 4), 1), new])
    if rng.random() < 0.3 and duration > 20:
        seeks.append(round(rng.uniform(10, duration - 6), 1))
    seg = round(math.exp(rng.uniform(math.log(8.0), math.log(30.0))), 1)
    fill = rng.uniform(max(40.0, 2 * seg), 120.0)
    mode = "segment" if rng.random() < 0.6 else "watermark"
    renew_after = round(rng.uniform(60, 400), 1) if rng.random() < 0.5 else 0.0
    return proto, {
        "host": rng.choice(["rr3---sn-lab.googlevideo.com", "rr1---sn-lab.googlevideo.com"]),
        "api_host": "youtubei-lab.googleapis.com",
        "video_id": f"lf-{rng.getrandbits(48):012x}",
        "video_length_s": rng.randint(300, 2400),
        "ladder_bps": list(LONGFORM_LADDER_BPS),
        "audio_bps": _AUDIO_BPS,
        "rung": rung,
        "segment_s": seg,
        "fill_target_s": round(fill, 1),
        "mode": mode,
        "low_watermark_s": round(fill - rng.uniform(1.0, 2.0) * seg, 1),
        "renew_after_s": renew_after,
        "switches": switches,
        "seeks": seeks,
        "stats_every_s": round(rng.uniform(10, 20), 1),
        "watch_page_size": rng.randint(50_000, 150_000),
        "range_in_query": True,
    }


# -- feed -------------------------------------------------------------------------------------
def _plan_feed(
    rng: random.Random, duration: float, protocol: str | None
) -> tuple[str, dict[str, Any]]:
    proto = protocol or _pick(rng, {"h2": 0.8, "h3": 0.2})
    hosts = ["scontent-lab.cdninstagram.com", "scontent-lab2.cdninstagram.com"]
    events: list[dict[str, Any]] = [{"at": 0.0, "kind": "api", "size": rng.randint(20_000, 80_000)}]
    t = 0.2
    posts = 0
    while t < duration:
        n = rng.randint(1, 3)
        sizes = [rng.randint(60_000, 250_000) for _ in range(n)]
        sizes += [rng.randint(3_000, 12_000) for _ in range(n)]  # avatars
        events.append(
            {"at": round(t, 2), "kind": "images", "sizes": sizes, "host": rng.choice(hosts)}
        )
        posts += n
        if rng.random() < 0.2:
            watched = rng.random() < 0.5
            events.append(
                {
                    "at": round(t + 0.3, 2),
                    "kind": "clip",
                    "host": rng.choice(hosts),
                    "first": rng.randint(300_000, 900_000),
                    "more": rng.randint(400_000, 1_200_000) if watched else 0,
                    "dwell_s": round(rng.uniform(3, 10), 1) if watched else 0.0,
                }
            )
        if posts >= 6:
            events.append(
                {"at": round(t + 0.1, 2), "kind": "api", "size": rng.randint(10_000, 60_000)}
            )
            posts = 0
        t += rng.uniform(1.5, 7.0)
    return proto, {"events": events, "api_host": "i-lab.instagram.com"}


# -- web --------------------------------------------------------------------------------------
def _plan_web(
    rng: random.Random, duration: float, protocol: str | None
) -> tuple[str, dict[str, Any]]:
    proto = protocol or _pick(rng, {"h2": 0.7, "h1": 0.3})
    hosts = ["www.lab-web.test", "static.lab-web.test", "cdn.lab-web.test"]
    pages: list[dict[str, Any]] = []
    t = 0.0
    while t < duration:
        res = [
            [rng.choice(hosts), int(_lognormal(rng, 15_000, 1.2, 800, 400_000))]
            for _ in range(rng.randint(8, 40))
        ]
        pages.append({"at": round(t, 2), "html": rng.randint(15_000, 120_000), "resources": res})
        t += _lognormal(rng, 8.0, 0.7, 2.0, 30.0)
    return proto, {"pages": pages, "concurrency": 6}


# -- call -------------------------------------------------------------------------------------
def _plan_call(rng: random.Random, duration: float) -> dict[str, Any]:
    video = rng.random() < 0.6
    mean = rng.uniform(700, 1100) if video else rng.uniform(90, 200)
    return {
        "host": "relay-lab.call.test",
        "video": video,
        "pps_up": round(rng.uniform(30, 50), 1),
        "pps_down": round(rng.uniform(30, 50), 1),
        "mean_up": round(mean, 1),
        "mean_down": round(mean * rng.uniform(0.8, 1.2), 1),
        "sd": round(mean * 0.3, 1),
        "call_seed": rng.getrandbits(31),
    }


# -- mixed ------------------------------------------------------------------------------------
def _plan_mixed(rng: random.Random, duration: float) -> tuple[str, str, dict[str, Any]]:
    app = "youtube" if rng.random() < 0.6 else "instagram"
    kinds = ["longform", "shorts", "web"] if app == "youtube" else ["feed", "reels", "web"]
    proto = _pick(rng, {"h3": 0.6, "h2": 0.4} if app == "youtube" else {"h2": 0.8, "h3": 0.2})
    n = max(2, min(4, int(duration // 12)))
    cuts = sorted(rng.uniform(0.15, 0.85) * duration for _ in range(n - 1))
    bounds = [0.0, *cuts, duration]
    min_seg = min(6.0, duration / n)
    for i in range(1, len(bounds) - 1):  # keep every segment at least min_seg long
        bounds[i] = max(bounds[i], bounds[i - 1] + min_seg)
        bounds[i] = min(bounds[i], duration - min_seg * (len(bounds) - 1 - i))
    order = [rng.choice(kinds[:2])]
    while len(order) < n:
        order.append(rng.choice([k for k in kinds if k != order[-1]]))
    if "short" not in " ".join(LABELS[k] for k in order):
        order[rng.randrange(n)] = kinds[1]
    segments = []
    for i, kind in enumerate(order):
        seg_len = bounds[i + 1] - bounds[i]
        sub_rng = random.Random(rng.getrandbits(64))
        _, params = _BUILDERS[kind](sub_rng, seg_len, proto)
        segments.append(
            {
                "start": round(bounds[i], 2),
                "end": round(bounds[i + 1], 2),
                "scenario": kind,
                "label": LABELS[kind],
                "app": _APPS[kind],
                "params": params,
            }
        )
    return app, proto, {"segments": segments}


_BUILDERS: dict[str, Any] = {
    "shorts": lambda r, d, p: _plan_swipe("shorts", r, d, p),
    "reels": lambda r, d, p: _plan_swipe("reels", r, d, p),
    "tiktok": lambda r, d, p: _plan_swipe("tiktok", r, d, p),
    "longform": _plan_longform,
    "feed": _plan_feed,
    "web": _plan_web,
}


def plan_session(scenario: str, seed: int, duration_s: float | None = None) -> SessionPlan:
    """Draw the plan of one session. Pure: same arguments, same plan.

    ``duration_s`` defaults to a per-session draw (20-60 s; 30-60 s for ``mixed``).

    Raises:
        ScenarioError: unknown scenario or a duration outside 4-600 s.
    """
    if scenario not in SCENARIOS:
        raise ScenarioError(
            f"unknown lab scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}"
        )
    rng = random.Random(f"shortflow-lab:{scenario}:{int(seed)}")
    if duration_s is None:
        duration = round(rng.uniform(30, 60) if scenario == "mixed" else rng.uniform(20, 60), 1)
    else:
        duration = float(duration_s)
    if not 4.0 <= duration <= 600.0:
        raise ScenarioError(f"session duration {duration} s is outside 4-600 s")
    label = LABELS[scenario]
    if scenario == "call":
        return SessionPlan(
            scenario, int(seed), duration, label, "call", "udp", _plan_call(rng, duration)
        )
    if scenario == "mixed":
        app, proto, params = _plan_mixed(rng, duration)
        return SessionPlan(scenario, int(seed), duration, label, app, proto, params)
    proto, params = _BUILDERS[scenario](rng, duration, None)
    return SessionPlan(scenario, int(seed), duration, label, _APPS[scenario], proto, params)
