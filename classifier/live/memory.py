"""Keeping `shortflow live`'s resident memory from creeping up: glibc malloc's arenas and
trims.

A burst of new flows (a SYN flood of 20,000 connections, a scan) makes the live loop
allocate and then free tens of MB of small objects: flow records, feature rows, verdicts,
the API's store of ended flows. glibc's ``free`` keeps that memory inside its heaps and
gives back to the kernel only what lies at the top of a heap, so without help the
process's RSS steps up at each burst and stays there (docs/performance.md, "Long run under
mixed traffic"). Three measures, all process-wide:

* :func:`python_malloc_argv`: Python's own small objects go through glibc's malloc too
  (``PYTHONMALLOC=malloc``; ``shortflow live`` runs itself again with it). Python's
  default allocator gives memory back to the C library only as whole 1 MiB arenas: one
  object left in an arena (a flow the API still lists, a DNS name) keeps the whole MiB
  resident, so after each burst a few more arenas stay. glibc's trim gives back every
  free 4 KiB page instead;
* :func:`limit_arenas`: ``mallopt(M_ARENA_MAX, 2)`` at start-up, before the API, DNS and
  capture threads start: at most two malloc arenas (glibc's default is 8 per core), so
  the few threads that allocate share heaps instead of each keeping its own free memory;
* :class:`Trimmer`: ``malloc_trim(0)`` from the live loop, which returns the free pages
  inside every arena to the kernel: after a large batch of flows ended or judged (the
  memory of a burst's flows), and otherwise once a minute, never more often than every
  few seconds (one trim of the ~350 MB live process took 0.4-1.3 ms in the soak).

On another C library (musl on OpenWrt) all three are no-ops: :func:`glibc` is False,
:func:`python_malloc_argv` returns None, :func:`limit_arenas` and :func:`trim` return
False. A ``PYTHONMALLOC`` set by the user is left as it is.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import time
from collections.abc import Callable

__all__ = ["ARENAS", "Trimmer", "glibc", "limit_arenas", "python_malloc_argv", "trim"]

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of the arena limit (glibc's ``<malloc.h>``).
M_ARENA_MAX = -8
#: The arena limit ``shortflow live`` sets.
ARENAS = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (has ``gnu_get_libc_version``,
    ``mallopt`` and ``malloc_trim``), else None."""
    try:
        lib = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(lib, n) for n in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.mallopt.restype = ctypes.c_int
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    lib.malloc_trim.restype = ctypes.c_int
    return lib


def glibc() -> bool:
    """Whether this process allocates through glibc's malloc (what the rest acts on)."""
    return _libc() is not None


def python_malloc_argv() -> list[str] | None:
    """The command line that runs this process again with ``PYTHONMALLOC=malloc`` (to
    ``os.execve`` with that in the environment: same process id, same arguments and
    interpreter options), or None when there is nothing to do: ``PYTHONMALLOC`` is set
    (by the user, or by the run that came before), the C library is not glibc, or the
    interpreter's own command line is unknown."""
    if "PYTHONMALLOC" in os.environ or not glibc():
        return None
    if not sys.executable or len(sys.orig_argv) < 2:
        return None
    return [sys.executable, *sys.orig_argv[1:]]


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas from now on (arenas made before stay); True when
    glibc took the setting."""
    lib = _libc()
    if lib is None or arenas < 1:
        return False
    return bool(lib.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give the free memory of every malloc arena back to the kernel
    (``malloc_trim(0)``); True when some was given back, False when none was or on
    another C library."""
    lib = _libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False


class Trimmer:
    """When the live loop trims. :meth:`step` after each batch, with how many flows
    ended or were judged in it: it trims when ``batch`` such flows have gathered since
    the last trim, or ``every`` seconds have passed since it; either way at least
    ``min_gap`` seconds after the last. ``every`` 0 turns it off. ``trimmer`` is what
    trims (:func:`trim`)."""

    def __init__(
        self,
        *,
        every: float = 60.0,
        batch: int = 1000,
        min_gap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        trimmer: Callable[[], bool] = trim,
    ) -> None:
        self.every, self.batch, self.min_gap = every, batch, min_gap
        self._clock, self._trim = clock, trimmer
        self._last = clock()
        self._flows = 0
        #: trims done, and the seconds they took in all
        self.trims = 0
        self.seconds = 0.0

    def step(self, flows: int = 0) -> bool:
        """Count ``flows`` and trim when it is time; True when it trimmed."""
        if self.every <= 0:
            return False
        self._flows += flows
        now = self._clock()
        since = now - self._last
        if since < self.min_gap or (self._flows < self.batch and since < self.every):
            return False
        start = time.perf_counter()
        self._trim()
        self.seconds += time.perf_counter() - start
        self.trims += 1
        self._last, self._flows = now, 0
        return True
