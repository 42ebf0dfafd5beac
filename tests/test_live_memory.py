"""`shortflow live`'s malloc settings (classifier.live.memory): measured on this process
and on a child, not mocked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from classifier.live.memory import Trimmer, glibc, limit_arenas, python_malloc_argv, trim

needs_glibc = pytest.mark.skipif(not glibc(), reason="malloc_trim and mallopt are glibc's")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@needs_glibc
def test_trim_gives_a_freed_burst_back() -> None:
    """64 MiB in 4 KiB objects (through malloc, below its mmap threshold), every 64th
    kept: freeing the rest leaves the pages resident between the kept ones; a trim gives
    most of them back."""
    blocks = [bytes(4096) for _ in range(16_384)]
    kept = blocks[::64]
    del blocks
    before = _rss_kb()
    assert trim() is True
    after = _rss_kb()
    assert len(kept) == 256
    assert before - after > 32 * 1024, f"RSS {before} -> {after} kB"


_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from classifier.live.memory import limit_arenas
    if sys.argv[1] == "limit":
        assert limit_arenas()
    barrier = threading.Barrier(9)
    held = []

    def work():
        held.append([bytes(1000) for _ in range(200)])  # > 512 B: malloc, in this thread
        barrier.wait()
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    barrier.wait()  # all 8 threads have allocated and are alive
    ctypes.CDLL(None).malloc_stats()  # to stderr, one "Arena N:" line per arena
    barrier.wait()
    for t in threads:
        t.join()
    """
)


def _arenas(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return sum(1 for line in out.stderr.splitlines() if line.startswith("Arena "))


@needs_glibc
def test_limit_arenas_caps_the_threads_arenas() -> None:
    """Eight threads allocating at once: more than two arenas by default, at most two
    after limit_arenas()."""
    assert _arenas("default") > 2
    assert 1 <= _arenas("limit") <= 2


_BURST = textwrap.dedent(
    """
    from pathlib import Path
    from classifier.live.memory import trim

    def rss():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    burst = [(float(i), i) for i in range(1_000_000)]  # ~100 MB of small objects
    kept = burst[::1000]  # one in a thousand outlives the burst
    del burst
    before = rss()
    trim()
    print(before - rss())
    """
)


def _given_back_kb(allocator: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _BURST],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONMALLOC": allocator},
    )
    return int(out.stdout)


@needs_glibc
def test_python_objects_on_malloc_are_given_back_page_by_page() -> None:
    """Why live mode runs on PYTHONMALLOC=malloc: a burst of a million small objects
    with one in a thousand kept. On Python's own allocator the survivors keep (nearly)
    every 1 MiB arena resident; on glibc's malloc a trim gives most of it back."""
    on_malloc, on_pymalloc = _given_back_kb("malloc"), _given_back_kb("pymalloc")
    assert on_malloc > 64 * 1024, f"malloc: {on_malloc} kB given back"
    assert on_pymalloc < on_malloc / 4, f"pymalloc {on_pymalloc} kB, malloc {on_malloc} kB"


def test_python_malloc_argv_leaves_a_set_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")
    assert python_malloc_argv() is None


def test_limit_arenas_refuses_zero() -> None:
    assert limit_arenas(0) is False


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_trimmer_after_a_batch_not_more_often_than_min_gap() -> None:
    clock, done = _Clock(), []
    t = Trimmer(
        every=60.0, batch=1000, min_gap=5.0, clock=clock, trimmer=lambda: done.append(1) or True
    )
    clock.now = 1.0
    assert t.step(5000) is False  # a burst right after the last trim: wait min_gap
    clock.now = 5.0
    assert t.step(0) is True  # the flows gathered before count
    clock.now = 6.0
    assert t.step(999) is False
    clock.now = 10.5
    assert t.step(1) is True
    assert t.trims == len(done) == 2
    assert t.seconds >= 0.0


def test_trimmer_once_a_minute_when_quiet_and_off_at_zero() -> None:
    clock, done = _Clock(), []
    t = Trimmer(every=60.0, clock=clock, trimmer=lambda: done.append(1) or True)
    for second in range(1, 181):
        clock.now = float(second)
        t.step(3)
    assert len(done) == 3  # at 60, 120, 180 s
    off = Trimmer(every=0.0, clock=clock, trimmer=lambda: done.append(1) or True)
    clock.now = 1000.0
    assert off.step(10**6) is False
    assert len(done) == 3
