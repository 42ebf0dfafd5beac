"""Client player emulators: each executes a :class:`~training.lab.scenarios.SessionPlan`.

Runs as a process inside the client namespace
(``python -m training.lab.players --plan P --ca CA --result R``). Behaviours:

* swipe (``shorts``, ``reels``, ``tiktok``): for each clip in the plan, wait for its first
  range (the startup chunk), start playback, prefetch the first chunk of the next
  ``prefetch_depth`` clips, fetch the clip's further ranges ``lookahead_s`` ahead of the
  playhead, and after ``dwell_s`` swipe: any range still downloading is abandoned. A clip
  marked ``new_conn`` is fetched over a new connection.
* ``longform``: a buffer model played in real time. Segments (video + audio,
  ``segment_s`` each) are fetched back to back until ``fill_target_s`` of media is
  buffered, then one segment each time the buffer drops a segment below target
  (``mode=segment``), or refill from a low to the high watermark (``mode=watermark``).
  Seeks flush the buffer; switches change the rung; after ``renew_after_s`` (0: never) the
  next segment goes over a new connection.
* ``feed``: scroll events fetch photos + avatars, API pages, and in-feed clips (first range,
  then more if the user dwells).
* ``web``: page loads, HTML then subresources six at a time.
* ``call``: steady UDP both ways to a relay (the relay streams back what the hello asks for).
* ``mixed``: the plan's segments one after another on the same connections; the actual
  start and end of each segment are written as the ground-truth timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from training.lab.clients import Fetcher, Resolver
from training.lab.scenarios import SessionPlan
from training.lab.servers import CALL_MAGIC
from training.lab.topology import CALL_PORT, DNS_IP

__all__ = ["run_plan", "main"]

_log = logging.getLogger(__name__)


class _Ctx:
    def __init__(self, fetcher: Fetcher | None, resolver: Resolver, seed: int) -> None:
        self.fetcher = fetcher
        self.resolver = resolver
        self.counts: dict[str, int] = {}
        self.rng = random.Random(seed)
        self.loop = asyncio.get_running_loop()

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def f(self) -> Fetcher:
        assert self.fetcher is not None
        return self.fetcher


async def _safe(ctx: _Ctx, aw: Awaitable[int]) -> int | None:
    """Await a transfer; a failure is counted and logged, cancellation passes through."""
    try:
        return await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed GET must not end the session
        ctx.count("errors")
        _log.debug("transfer failed: %r", exc)
        return None


async def _sleep_until(ctx: _Ctx, t: float) -> None:
    delay = t - ctx.loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _cancel_all(tasks: Any) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


# -- swipe ------------------------------------------------------------------------------------
async def _swipe(ctx: _Ctx, p: dict[str, Any], deadline: float) -> None:
    clips: list[dict[str, Any]] = p["clips"]
    rq = bool(p["range_in_query"])
    first: dict[int, asyncio.Task[int | None]] = {}
    background: list[asyncio.Task[Any]] = []

    def chunk(clip: dict[str, Any], k: int) -> Coroutine[Any, Any, int | None]:
        a, b = clip["chunks"][k]
        if rq:
            path = f"/videoplayback?id={clip['id']}&itag=lab&len={clip['size']}"
        else:
            path = f"/v/{clip['id']}.mp4?len={clip['size']}"
        return _safe(ctx, ctx.f.get(clip["host"], path, a, b, range_in_query=rq))

    def ensure_first(i: int) -> None:
        if i < len(clips) and i not in first:
            if clips[i]["new_conn"]:
                ctx.f.renew(clips[i]["host"])
            first[i] = asyncio.create_task(chunk(clips[i], 0))

    async def rest(clip: dict[str, Any], t0: float) -> None:
        for k in range(1, len(clip["chunks"])):
            media_t = clip["chunks"][k][0] / clip["size"] * clip["length_s"]
            await _sleep_until(ctx, t0 + media_t - p["lookahead_s"])
            await chunk(clip, k)

    try:
        for i, clip in enumerate(clips):
            if ctx.loop.time() >= deadline:
                break
            ensure_first(i)
            await asyncio.wait({first[i]}, timeout=max(0.0, deadline - ctx.loop.time()))
            if ctx.loop.time() >= deadline:
                break
            t0 = ctx.loop.time()
            ctx.count("clips_played")
            for d in range(1, int(p["prefetch_depth"]) + 1):
                ensure_first(i + d)
            if i % int(p["api_every"]) == 0:
                background.append(
                    asyncio.create_task(
                        _safe(ctx, ctx.f.get(p["api_host"], f"/api/next?len={p['api_size']}"))
                    )
                )
            rest_task = asyncio.create_task(rest(clip, t0))
            await _sleep_until(ctx, min(t0 + clip["dwell_s"], deadline))
            if not rest_task.done():
                ctx.count("abandoned")
            await _cancel_all([rest_task])
            if ctx.loop.time() < deadline:
                ctx.count("swipes")
    finally:
        await _cancel_all([*first.values(), *background])


# -- long-form --------------------------------------------------------------------------------
async def _longform(ctx: _Ctx, p: dict[str, Any], deadline: float) -> None:
    loop = ctx.loop
    t_start = loop.time()
    ladder: list[int] = p["ladder_bps"]
    seg: float = p["segment_s"]
    rung: int = p["rung"]
    rq = bool(p["range_in_query"])
    n_segs = int(p["video_length_s"] / seg)
    background = [
        asyncio.create_task(
            _safe(ctx, ctx.f.get(p["api_host"], f"/youtubei/v1/player?len={p['watch_page_size']}"))
        )
    ]
    events: list[tuple[float, str, int]] = sorted(
        [(float(t), "switch", int(r)) for t, r in p["switches"]]
        + [(float(t), "seek", 0) for t in p["seeks"]]
    )
    buffer = 0.0
    playing = False
    filling = True
    pos = 0
    inflight: asyncio.Task[bool] | None = None
    last = loop.time()
    next_stats = t_start + float(p["stats_every_s"])
    renew_after = float(p["renew_after_s"])
    conn_since = t_start

    async def fetch_segment(r: int, idx: int) -> bool:
        vbr = random.Random(f"{p['video_id']}:{r}:{idx}").uniform(0.8, 1.2)
        nominal_v = int(seg * ladder[r] / 8)
        nominal_a = int(seg * p["audio_bps"] / 8)
        v_len, a_len = int(nominal_v * vbr), nominal_a
        v_total = int(n_segs * nominal_v * 1.3)
        a_total = n_segs * nominal_a + 1
        vid = f"/videoplayback?id={p['video_id']}&itag=v{r}&len={v_total}"
        aud = f"/videoplayback?id={p['video_id']}&itag=a&len={a_total}"
        got = await asyncio.gather(
            _safe(
                ctx,
                ctx.f.get(
                    p["host"], vid, idx * nominal_v, idx * nominal_v + v_len - 1, range_in_query=rq
                ),
            ),
            _safe(
                ctx,
                ctx.f.get(
                    p["host"], aud, idx * nominal_a, idx * nominal_a + a_len - 1, range_in_query=rq
                ),
            ),
        )
        return all(g is not None for g in got)

    try:
        while (now := loop.time()) < deadline:
            dt, last = now - last, now
            if playing:
                buffer = max(0.0, buffer - dt)
                if buffer == 0.0:
                    playing = False
                    ctx.count("stalls")
            while events and t_start + events[0][0] <= now:
                _, kind, value = events.pop(0)
                if kind == "switch":
                    rung = value
                    ctx.count("switches")
                else:
                    if inflight is not None:
                        await _cancel_all([inflight])
                        inflight = None
                        ctx.count("abandoned")
                    buffer, playing, filling = 0.0, False, True
                    pos = (pos + 24) % max(1, n_segs - 1)
                    ctx.count("seeks")
            if inflight is not None and inflight.done():
                if inflight.result():
                    buffer += seg
                    pos = (pos + 1) % max(1, n_segs - 1)
                    ctx.count("segments")
                inflight = None
                if not playing and buffer >= seg:
                    playing = True
            if p["mode"] == "segment":
                want = buffer + seg <= p["fill_target_s"]
            else:
                if buffer >= p["fill_target_s"]:
                    filling = False
                elif buffer <= p["low_watermark_s"]:
                    filling = True
                want = filling
            if want and inflight is None:
                if renew_after and now - conn_since >= renew_after:
                    ctx.f.renew(p["host"])  # the player replaces its connection
                    conn_since = now
                inflight = asyncio.create_task(fetch_segment(rung, pos))
            if now >= next_stats:
                background.append(
                    asyncio.create_task(
                        _safe(
                            ctx,
                            ctx.f.get(
                                p["api_host"], f"/api/stats/qoe?len={ctx.rng.randint(200, 2000)}"
                            ),
                        )
                    )
                )
                next_stats += float(p["stats_every_s"])
            await asyncio.sleep(0.05)
    finally:
        await _cancel_all([*background, *([inflight] if inflight else [])])


# -- feed -------------------------------------------------------------------------------------
async def _feed(ctx: _Ctx, p: dict[str, Any], deadline: float) -> None:
    t_start = ctx.loop.time()
    sem = asyncio.Semaphore(4)
    tasks: list[asyncio.Task[Any]] = []

    async def image(host: str, size: int) -> None:
        async with sem:
            await _safe(
                ctx, ctx.f.get(host, f"/v/t51.lab/{ctx.rng.getrandbits(40):x}_n.jpg?len={size}")
            )

    async def clip(ev: dict[str, Any]) -> None:
        cid = f"/v/t50.lab/{ctx.rng.getrandbits(40):x}.mp4?len={ev['first'] + ev['more']}"
        await _safe(ctx, ctx.f.get(ev["host"], cid, 0, ev["first"] - 1))
        ctx.count("clips")
        if ev["more"]:
            await asyncio.sleep(ev["dwell_s"] / 2)
            await _safe(ctx, ctx.f.get(ev["host"], cid, ev["first"], ev["first"] + ev["more"] - 1))

    try:
        for ev in p["events"]:
            if t_start + ev["at"] >= deadline:
                break
            await _sleep_until(ctx, t_start + ev["at"])
            if ev["kind"] == "api":
                tasks.append(
                    asyncio.create_task(
                        _safe(
                            ctx,
                            ctx.f.get(p["api_host"], f"/api/v1/feed/timeline/?len={ev['size']}"),
                        )
                    )
                )
            elif ev["kind"] == "images":
                ctx.count("scrolls")
                tasks += [asyncio.create_task(image(ev["host"], s)) for s in ev["sizes"]]
            elif ev["kind"] == "clip":
                tasks.append(asyncio.create_task(clip(ev)))
        await _sleep_until(ctx, deadline)
    finally:
        await _cancel_all(tasks)


# -- web --------------------------------------------------------------------------------------
async def _web(ctx: _Ctx, p: dict[str, Any], deadline: float) -> None:
    t_start = ctx.loop.time()
    sem = asyncio.Semaphore(int(p["concurrency"]))

    async def res(host: str, size: int) -> None:
        async with sem:
            await _safe(ctx, ctx.f.get(host, f"/assets/{ctx.rng.getrandbits(40):x}?len={size}"))

    async def page(pg: dict[str, Any]) -> None:
        await _safe(
            ctx,
            ctx.f.get("www.lab-web.test", f"/page/{ctx.rng.getrandbits(32):x}?len={pg['html']}"),
        )
        await asyncio.gather(*(res(h, s) for h, s in pg["resources"]))
        ctx.count("pages")

    current: asyncio.Task[None] | None = None
    try:
        for pg in p["pages"]:
            if t_start + pg["at"] >= deadline:
                break
            await _sleep_until(ctx, t_start + pg["at"])
            if current is not None and not current.done():
                await asyncio.wait({current}, timeout=max(0.0, deadline - ctx.loop.time()))
            current = asyncio.create_task(page(pg))
        await _sleep_until(ctx, deadline)
    finally:
        await _cancel_all([current] if current else [])


# -- call -------------------------------------------------------------------------------------
class _CallClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


async def _call(ctx: _Ctx, p: dict[str, Any], deadline: float) -> None:
    ip = await ctx.resolver.resolve(p["host"])
    transport, proto = await ctx.loop.create_datagram_endpoint(
        _CallClient, remote_addr=(ip, CALL_PORT)
    )
    rng = random.Random(p["call_seed"])
    pad = rng.randbytes(1200)
    t0 = ctx.loop.time()
    hello = (
        CALL_MAGIC
        + json.dumps(
            {
                "pps": p["pps_down"],
                "mean": p["mean_down"],
                "sd": p["sd"],
                "duration": max(1.0, deadline - t0),
                "seed": p["call_seed"] + 1,
            }
        ).encode()
        + b"\0"
    )
    n = 0
    next_hello = t0
    try:
        while ctx.loop.time() < deadline:
            now = ctx.loop.time()
            if proto.received == 0 and now >= next_hello:
                transport.sendto(hello + pad[:160])
                next_hello = now + 1.0
            else:
                size = int(min(1200, max(60, rng.gauss(p["mean_up"], p["sd"]))))
                transport.sendto(n.to_bytes(4, "big") + pad[: size - 4])
            n += 1
            await _sleep_until(ctx, t0 + n / float(p["pps_up"]))
    finally:
        ctx.count("sent", n)
        ctx.count("received", proto.received)
        transport.close()


# -- driver -----------------------------------------------------------------------------------
_Behaviour = Callable[[_Ctx, dict[str, Any], float], Coroutine[Any, Any, None]]
_BEHAVIOURS: dict[str, _Behaviour] = {
    "shorts": _swipe,
    "reels": _swipe,
    "tiktok": _swipe,
    "longform": _longform,
    "feed": _feed,
    "web": _web,
    "call": _call,
}


async def run_plan(plan: SessionPlan, ca: Path, dns: str = DNS_IP) -> dict[str, Any]:
    """Execute ``plan`` now, in real time; return start/end times, counters and intervals.

    Must run inside the lab's client namespace (it talks to the lab's addresses).
    """
    resolver = Resolver(dns, seed=plan.seed)
    fetcher = (
        None if plan.protocol == "udp" else Fetcher(plan.protocol, ca, resolver, seed=plan.seed)
    )
    ctx = _Ctx(fetcher, resolver, plan.seed)
    loop = asyncio.get_running_loop()
    t0_wall, t0 = time.time(), loop.time()
    intervals: list[dict[str, Any]] = []
    try:
        if plan.scenario == "mixed":
            for seg in plan.params["segments"]:
                s_wall = time.time()
                await _BEHAVIOURS[seg["scenario"]](ctx, seg["params"], t0 + seg["end"])
                intervals.append(
                    {
                        "start": s_wall,
                        "end": time.time(),
                        "label": seg["label"],
                        "scenario": seg["scenario"],
                        "app": seg["app"],
                    }
                )
        else:
            await _BEHAVIOURS[plan.scenario](ctx, plan.params, t0 + plan.duration_s)
            intervals.append(
                {
                    "start": t0_wall,
                    "end": time.time(),
                    "label": plan.label,
                    "scenario": plan.scenario,
                    "app": plan.app,
                }
            )
    finally:
        if fetcher is not None:
            await fetcher.aclose()
    stats: dict[str, Any] = dict(ctx.counts)
    stats["dns_queries"] = resolver.queries
    if fetcher is not None:
        stats.update(fetcher.stats.as_dict())
    return {"start": t0_wall, "end": time.time(), "stats": stats, "intervals": intervals}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the player process (run inside the client namespace)."""
    ap = argparse.ArgumentParser(prog="python -m training.lab.players")
    ap.add_argument("--plan", required=True, type=Path)
    ap.add_argument("--ca", required=True, type=Path)
    ap.add_argument("--result", required=True, type=Path)
    ap.add_argument("--dns", default=DNS_IP)
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SHORTFLOW_LAB_LOG", "WARNING"))
    plan = SessionPlan.from_json(args.plan.read_text())

    async def _main() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await run_plan(plan, args.ca, args.dns)

    with contextlib.suppress(asyncio.CancelledError):
        result = asyncio.run(_main())
        args.result.write_text(json.dumps(result))
        return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
