"""All feature groups of :mod:`classifier.features.schema`, computed for many flows at once.

The input is every entry (packet, or resegmented piece) of a set of flows, grouped by flow
(``offsets``: flow ``j`` owns entries ``offsets[j]:offsets[j+1]``, in arrival order). A
numba-compiled loop runs over the segments and writes one row of ``FEATURE_COLUMNS`` per
view (whole flow, early snapshot, or time window): segmented reductions done in compiled
code rather than one Python call per flow.

Every value is computed the way the reference groups compute it with numpy, operation for
operation, so results are bit-identical in practice: sums of floats use numpy's pairwise
summation (8-way unrolled blocks of 128), ``std`` is the population one (``ddof=0``: mean,
squared deviations, pairwise sum, divide, sqrt), percentiles use numpy's default linear
method (``(n-1)*q`` virtual index and numpy's two-sided lerp; the two order statistics
read are found by selection, not a sort: any correct selection yields numpy's values), and
``searchsorted`` is numpy's binary search including its reuse of the previous key's bounds
(which matters only when times go backwards within a flow).

The column layout is checked at import against the reference schema, so a changed group
fails loudly instead of silently producing shifted columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from classifier.compiled import jit
from classifier.features.schema import FEATURE_COLUMNS

__all__ = ["N_FEATURES", "flow_features", "window_views", "window_features"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

_SUMMARY = ("min", "max", "mean", "std", "p10", "p50", "p90")
_IAT = ("min", "max", "mean", "std", "p50", "p90")
_BURSTS = (
    "burst_count",
    "bursts_per_s",
    "burst_bytes_min",
    "burst_bytes_max",
    "burst_bytes_mean",
    "burst_bytes_std",
    "burst_bytes_p50",
    "burst_bytes_cv",
    "burst_dur_mean",
    "burst_dur_max",
    "burst_dur_p50",
    "burst_gap_mean",
    "burst_gap_std",
    "burst_gap_max",
    "burst_gap_p50",
    "req_bytes_mean",
    "req_bytes_max",
    "req_bytes_p50",
    "req_count",
    "first_burst_bytes",
    "first_burst_dur",
    "idle_frac",
)
_SPLT_N = 32
_LAYOUT: tuple[str, ...] = (
    "duration",
    "pkts_up",
    "pkts_down",
    "bytes_up",
    "bytes_down",
    "payload_up",
    "payload_down",
    "down_up_byte_ratio",
    "pkts_per_s",
    "bytes_per_s",
    *(f"size_{d}_{s}" for d in ("up", "down") for s in _SUMMARY),
    *(f"iat_{d}_{s}" for d in ("up", "down", "all") for s in _IAT),
    *_BURSTS,
    *(f"{d}_bytes_first_{h}s" for d in ("up", "down") for h in (1, 3, 10)),
    *(f"flag_{n}" for n in ("fin", "syn", "rst", "psh", "ack", "urg")),
    *(f"splt_size_{i}" for i in range(_SPLT_N)),
    *(f"splt_iat_{i}" for i in range(_SPLT_N)),
)
if _LAYOUT != tuple(FEATURE_COLUMNS):  # pragma: no cover - guards against schema drift
    raise ImportError(
        "classifier.features.groups_fast is out of date with the feature schema "
        "(FEATURE_COLUMNS changed); update its compiled groups"
    )

#: Number of feature columns of one view.
N_FEATURES = len(_LAYOUT)
_BURST_GAP = 0.5
_O_SIZES = 10
_O_IAT = _O_SIZES + 14
_O_BURSTS = _O_IAT + 18
_O_THROUGHPUT = _O_BURSTS + 22
_O_FLAGS = _O_THROUGHPUT + 6
_O_SPLT = _O_FLAGS + 6
#: Percentiles of at least this many values go through bucket counts (below, quickselect).
_BUCKET_MIN = 1 << 14
_SHIFT = np.uint64(48)  # bucket = top 16 bits of the order-preserving image
_BUCKETS = 1 << 16
_SIGN = np.uint64(1 << 63)


# ---------------------------------------------------------------------------------------
# numpy-exact primitives


@jit(cache=True, inline="always")
def _block(a: F64, lo: int, n: int) -> float:
    """numpy's pairwise-sum leaf: ``n <= 128`` values, 8 accumulators below 8 otherwise."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - (n % 8)
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@jit(cache=True, inline="always")
def _block_sq(a: F64, lo: int, n: int, mean: float) -> float:
    """:func:`_block` of the squared deviations ``(a[i] - mean) ** 2``, computed as they
    are read (the same values, added in the same order, as summing a stored copy)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            d = a[lo + i] - mean
            res += d * d
        return res
    d0, d1, d2, d3 = a[lo] - mean, a[lo + 1] - mean, a[lo + 2] - mean, a[lo + 3] - mean
    d4, d5, d6, d7 = a[lo + 4] - mean, a[lo + 5] - mean, a[lo + 6] - mean, a[lo + 7] - mean
    r0, r1, r2, r3 = d0 * d0, d1 * d1, d2 * d2, d3 * d3
    r4, r5, r6, r7 = d4 * d4, d5 * d5, d6 * d6, d7 * d7
    i = 8
    stop = n - (n % 8)
    while i < stop:
        d0, d1 = a[lo + i] - mean, a[lo + i + 1] - mean
        d2, d3 = a[lo + i + 2] - mean, a[lo + i + 3] - mean
        d4, d5 = a[lo + i + 4] - mean, a[lo + i + 5] - mean
        d6, d7 = a[lo + i + 6] - mean, a[lo + i + 7] - mean
        r0 += d0 * d0
        r1 += d1 * d1
        r2 += d2 * d2
        r3 += d3 * d3
        r4 += d4 * d4
        r5 += d5 * d5
        r6 += d6 * d6
        r7 += d7 * d7
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        d = a[lo + i] - mean
        res += d * d
        i += 1
    return res


@jit(cache=True, inline="always")
def _leaf(a: F64, lo: int, n: int, mean: float, squares: bool) -> float:
    return _block_sq(a, lo, n, mean) if squares else _block(a, lo, n)


@jit(cache=True)
def _pairwise(a: F64, lo: int, n: int, mean: float, squares: bool) -> float:
    """numpy's pairwise sum of ``a[lo:lo+n]`` (float64, contiguous), or with ``squares``
    of ``(a[i] - mean) ** 2``: leaves of at most 128 values, each larger range split at
    ``n//2`` rounded down to a multiple of 8 and the two halves added (left + right).
    Iterative (numba cannot cache recursive functions)."""
    if n <= 128:
        return _leaf(a, lo, n, mean, squares)
    st_lo = np.empty(128, np.int64)
    st_n = np.empty(128, np.int64)
    st_stage = np.empty(128, np.int64)
    vals = np.empty(128, np.float64)
    sp = 0
    vp = 0
    st_lo[0], st_n[0], st_stage[0] = lo, n, 0
    sp = 1
    while sp > 0:
        top = sp - 1
        cl = st_lo[top]
        cn = st_n[top]
        if cn <= 128:
            vals[vp] = _leaf(a, cl, cn, mean, squares)
            vp += 1
            sp -= 1
            continue
        n2 = cn // 2
        n2 -= n2 % 8
        stage = st_stage[top]
        if stage == 0:
            st_stage[top] = 1
            st_lo[sp], st_n[sp], st_stage[sp] = cl, n2, 0
            sp += 1
        elif stage == 1:
            st_stage[top] = 2
            st_lo[sp], st_n[sp], st_stage[sp] = cl + n2, cn - n2, 0
            sp += 1
        else:
            right = vals[vp - 1]
            left = vals[vp - 2]
            vals[vp - 2] = left + right
            vp -= 1
            sp -= 1
    return vals[0]


@jit(cache=True)
def _sum(a: F64, n: int) -> float:
    """``float(a[:n].sum())`` as numpy computes it (identity 0.0 plus the pairwise sum)."""
    return 0.0 + _pairwise(a, 0, n, 0.0, False)


@jit(cache=True)
def _mean_std(a: F64, n: int) -> tuple[float, float]:
    """numpy's ``a.mean()`` and ``a.std()`` (ddof=0) of ``a[:n]``, ``n > 0`` (mean, then
    the pairwise sum of the squared deviations, divide, sqrt)."""
    mean = _sum(a, n) / n
    return mean, math.sqrt((0.0 + _pairwise(a, 0, n, mean, True)) / n)


@jit(cache=True, inline="always")
def _lerp(a: float, b: float, gamma: float) -> float:
    """numpy's two-sided linear interpolation between neighbouring order statistics."""
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1.0 - gamma)
    return a + diff * gamma


@jit(cache=True)
def _pct(srt: F64, n: int, q: float) -> float:
    """numpy's default (linear) percentile of the sorted ``srt[:n]``; ``q`` in [0, 1]."""
    vi = float(n - 1) * q
    if vi >= n - 1:
        return srt[n - 1]
    prev = math.floor(vi)
    return _lerp(srt[int(prev)], srt[int(prev) + 1], vi - prev)


@jit(cache=True, inline="always")
def _before(a: float, b: float) -> bool:
    """numpy's sort order: ``a < b`` with NaN after every number."""
    return a < b or (b != b and a == a)


@jit(cache=True)
def _select(a: F64, k: int, lo: int, hi: int) -> int:
    """Reorder ``a[lo:hi+1]`` so that ``a[k]`` holds the value of sorted rank ``k``, with
    what is before it not ordered after it and what is after it not ordered before it.
    Returns the last position ``e >= k`` known to hold its rank (``a[k:e+1]`` are equal).
    Quickselect with a three-way partition (median-of-three pivot): traffic repeats values
    a lot (full-size packets, equal timestamps) and a run of values equal to the pivot is
    settled in one pass."""
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if _before(y, x):
            x, y = y, x
        if _before(z, y):
            y = z if _before(x, z) else x
        pivot = y
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = a[i]
            if _before(v, pivot):
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif _before(pivot, v):
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            return gt
    return k


@jit(cache=True)
def _read_ranks(
    srt: F64, ranks: I64, nr: int, region: I64, within: I64, start: I64, out: F64
) -> None:
    """``out[r]`` = the value of rank ``within[r]`` among the values in region
    ``region[r]`` of ``srt`` (``srt[start[j]:start[j+1]]``), for ranks ascending within a
    region. Each region keeps a front: the positions from the last rank read up to it
    hold their ranks and nothing after it is ordered before them. A rank behind the front
    is already in place; the rank just after the one read before (percentiles read pairs)
    is the smallest value past the front (one scan, no swaps); others are selected (whose
    runs of equal values move the front further)."""
    fixed = start[:-1].copy()
    for r in range(nr):
        j = region[r]
        at = start[j] + within[r]
        end = start[j + 1] - 1
        if at == fixed[j] and r > 0 and region[r - 1] == j and ranks[r] == ranks[r - 1] + 1:
            m = at
            for i in range(at + 1, end + 1):
                if _before(srt[i], srt[m]):
                    m = i
            srt[at], srt[m] = srt[m], srt[at]
            fixed[j] = at + 1
        elif at >= fixed[j]:
            fixed[j] = _select(srt, at, fixed[j], end) + 1
        out[r] = srt[at]


@jit(cache=True)
def _bucket_counts(a: F64, n: int, hist: I64) -> bool:
    """Count the values of ``a[:n]`` per bucket (:data:`_BUCKETS` of them: the top bits of
    an order-preserving integer image of the float, so bucket numbers never decrease as
    values grow). Returns False, leaving the counts unusable, when a NaN or a -0.0 is
    present: numpy orders those by comparison (a -0.0 ties with 0.0), buckets would not."""
    hist[:] = 0
    u = a[:n].view(np.uint64)
    odd = False
    for i in range(n):
        x = u[i]
        key = ~x if x >> np.uint64(63) else x | _SIGN
        hist[key >> _SHIFT] += 1
        odd |= (a[i] != a[i]) | (x == _SIGN)
    return not odd


@jit(cache=True)
def _gather_buckets(
    a: F64, n: int, srt: F64, hist: I64, ranks: I64, nr: int, region: I64, within: I64, start: I64
) -> None:
    """From the bucket counts of :func:`_bucket_counts`: the bucket of each rank, one
    region of ``srt`` per bucket read (``start``), the values of those buckets copied into
    their regions, and each rank's region and rank within it. Uses up ``hist``."""
    bucket = np.empty(nr, np.int64)
    nb_ = 0
    b = 0
    below = 0  # values in buckets before b
    for r in range(nr):
        while below + hist[b] <= ranks[r]:
            below += hist[b]
            b += 1
        if nb_ == 0 or bucket[nb_ - 1] != b:
            bucket[nb_] = b
            start[nb_ + 1] = start[nb_] + hist[b]
            nb_ += 1
        region[r] = nb_ - 1
        within[r] = ranks[r] - below
    pos = start[:nb_].copy()
    for j in range(nb_):
        hist[bucket[j]] = -(j + 1)  # mark the buckets read (their counts are used)
    u = a[:n].view(np.uint64)
    for i in range(n):
        x = u[i]
        key = ~x if x >> np.uint64(63) else x | _SIGN
        m = hist[key >> _SHIFT]
        if m < 0:
            srt[pos[-m - 1]] = a[i]
            pos[-m - 1] += 1


@jit(cache=True)
def _percentiles(
    a: F64, n: int, srt: F64, hist: I64, q1: float, q2: float, q3: float
) -> tuple[float, float, float]:
    """numpy's linear percentiles ``q1 < q2 < q3`` (negative: unused, 0.0) of ``a[:n]``,
    ``n > 0``, using ``srt`` (and ``hist``, :data:`_BUCKETS` entries) as scratch.

    Only the (at most six) order statistics the percentiles read are needed, and any way
    of finding them gives numpy's values: insertion sort for small ``n``; otherwise
    selection, for large ``n`` only within the few buckets holding them (two counting
    passes, then a small copy) rather than within a copy of everything."""
    if n <= 64:
        for i in range(n):
            srt[i] = a[i]
        _sort(srt, n)
        return (
            _pct(srt, n, q1) if q1 >= 0.0 else 0.0,
            _pct(srt, n, q2) if q2 >= 0.0 else 0.0,
            _pct(srt, n, q3) if q3 >= 0.0 else 0.0,
        )
    qs = (q1, q2, q3)
    ranks = np.empty(6, np.int64)  # the ranks read, ascending
    nr = 0
    for q in qs:
        if q >= 0.0:
            vi = float(n - 1) * q
            ranks[nr] = n - 1 if vi >= n - 1 else int(math.floor(vi))
            nr += 1
            if vi < n - 1:
                ranks[nr] = ranks[nr - 1] + 1
                nr += 1
    region = np.zeros(6, np.int64)
    within = ranks.copy()
    start = np.zeros(7, np.int64)
    if n >= _BUCKET_MIN and _bucket_counts(a, n, hist):
        _gather_buckets(a, n, srt, hist, ranks, nr, region, within, start)
    else:
        for i in range(n):
            srt[i] = a[i]
        start[1] = n
    values = np.empty(6, np.float64)
    _read_ranks(srt, ranks, nr, region, within, start[: region[nr - 1] + 2], values)
    res = np.zeros(3, np.float64)
    r = 0
    for i in range(3):
        if qs[i] >= 0.0:
            vi = float(n - 1) * qs[i]
            if vi >= n - 1:
                res[i] = values[r]
                r += 1
            else:
                res[i] = _lerp(values[r], values[r + 1], vi - math.floor(vi))
                r += 2
    return res[0], res[1], res[2]


@jit(cache=True)
def _sort(a: F64, n: int) -> None:
    """Sort ``a[:n]`` in place (insertion sort for the many small views: numba's generic
    sort costs ~0.4 us even for a handful of values)."""
    if n > 64:
        a[:n].sort()
        return
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@jit(cache=True)
def _summary(a: F64, n: int, srt: F64, hist: I64, out: F64, o: int, which: int) -> None:
    """Summary statistics of ``a[:n]`` into ``out[o:]``; all zeros when ``n == 0``.

    ``which``: 0 = min max mean std p10 p50 p90; 1 = min max mean std p50 p90;
    2 = min max mean std p50; 3 = mean max p50; 4 = mean std max p50.
    """
    width = (
        7 if which == 0 else (6 if which == 1 else (5 if which == 2 else (4 if which == 4 else 3)))
    )
    if n == 0:
        for i in range(width):
            out[o + i] = 0.0
        return
    lo = a[0]
    hi = a[0]
    for i in range(1, n):
        v = a[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    mean, std = _mean_std(a, n)
    if which == 0:
        p10, p50, p90 = _percentiles(a, n, srt, hist, 0.1, 0.5, 0.9)
        out[o], out[o + 1], out[o + 2], out[o + 3] = lo, hi, mean, std
        out[o + 4], out[o + 5], out[o + 6] = p10, p50, p90
    elif which == 1:
        p50, p90, _ = _percentiles(a, n, srt, hist, 0.5, 0.9, -1.0)
        out[o], out[o + 1], out[o + 2], out[o + 3] = lo, hi, mean, std
        out[o + 4], out[o + 5] = p50, p90
    else:
        p50, _, _ = _percentiles(a, n, srt, hist, 0.5, -1.0, -1.0)
        if which == 2:
            out[o], out[o + 1], out[o + 2], out[o + 3] = lo, hi, mean, std
            out[o + 4] = p50
        elif which == 4:
            out[o], out[o + 1], out[o + 2] = mean, std, hi
            out[o + 3] = p50
        else:
            out[o], out[o + 1] = mean, hi
            out[o + 2] = p50


@jit(cache=True)
def _searchsorted_right(arr: F64, na: int, keys: F64, nk: int, out: I64) -> None:
    """``np.searchsorted(arr[:na], keys[:nk], side="right")``, numpy's exact algorithm."""
    min_idx = 0
    max_idx = na
    if nk == 0:
        return
    last = keys[0]
    for j in range(nk):
        key = keys[j]
        if last < key:
            max_idx = na
        else:
            min_idx = 0
            max_idx = max_idx + 1 if max_idx < na else na
        last = key
        while min_idx < max_idx:
            mid = min_idx + ((max_idx - min_idx) >> 1)
            if not key < arr[mid]:
                min_idx = mid + 1
            else:
                max_idx = mid
        out[j] = min_idx


# ---------------------------------------------------------------------------------------
# one view


@jit(cache=True)
def _view(
    t: F64,
    size: I64,
    dirn: I8,
    flags: I64,
    pay: I64,
    n: int,
    span: float,
    out: F64,
    o: int,
    sf: F64,
    si: I64,
    hist: I64,
) -> None:
    """All feature groups of one view (``t`` relative to the view's start) into
    ``out[o:o+N_FEATURES]``. ``sf`` (10 rows) and ``si`` (4 rows) are scratch arrays of at
    least ``n + 1`` columns, ``hist`` one of :data:`_BUCKETS` entries."""
    w = sf[0]
    srt = sf[1]
    # --- volume
    n_up = 0
    b_up = 0
    b_down = 0
    p_up = 0
    p_down = 0
    for i in range(n):
        if dirn[i] == 1:
            n_up += 1
            b_up += size[i]
            p_up += pay[i]
        else:
            b_down += size[i]
            p_down += pay[i]
    bytes_up = float(b_up)
    bytes_down = float(b_down)
    rate_base = max(span, 1e-3)
    out[o] = span
    out[o + 1] = float(n_up)
    out[o + 2] = float(n - n_up)
    out[o + 3] = bytes_up
    out[o + 4] = bytes_down
    out[o + 5] = float(p_up)
    out[o + 6] = float(p_down)
    out[o + 7] = bytes_down / max(bytes_up, 1.0)
    out[o + 8] = n / rate_base
    out[o + 9] = (bytes_up + bytes_down) / rate_base
    # --- sizes per direction
    for d in range(2):
        sign = 1 if d == 0 else -1
        m = 0
        for i in range(n):
            if dirn[i] == sign:
                w[m] = float(size[i])
                m += 1
        _summary(w, m, srt, hist, out, o + _O_SIZES + 7 * d, 0)
    # --- inter-arrival per direction, then over both
    for d in range(2):
        sign = 1 if d == 0 else -1
        m = 0
        prev = 0.0
        for i in range(n):
            if dirn[i] == sign:
                if m > 0:
                    w[m - 1] = t[i] - prev
                prev = t[i]
                m += 1
        _summary(w, max(m - 1, 0), srt, hist, out, o + _O_IAT + 6 * d, 1)
    for i in range(1, n):
        w[i - 1] = t[i] - t[i - 1]
    _summary(w, max(n - 1, 0), srt, hist, out, o + _O_IAT + 12, 1)
    # --- bursts
    _bursts(t, dirn, pay, n, span, out, o + _O_BURSTS, sf, si, hist)
    # --- throughput
    for d in range(2):
        sign = 1 if d == 0 else -1
        s1 = 0
        s3 = 0
        s10 = 0
        for i in range(n):
            if dirn[i] == sign:
                ti = t[i]
                if ti < 1.0:
                    s1 += size[i]
                if ti < 3.0:
                    s3 += size[i]
                if ti < 10.0:
                    s10 += size[i]
        out[o + _O_THROUGHPUT + 3 * d] = float(s1)
        out[o + _O_THROUGHPUT + 3 * d + 1] = float(s3)
        out[o + _O_THROUGHPUT + 3 * d + 2] = float(s10)
    # --- TCP flags (the reference keeps flags as uint8)
    c_fin = c_syn = c_rst = c_psh = c_ack = c_urg = 0
    for i in range(n):
        f = flags[i]
        c_fin += (f & 0x01) != 0
        c_syn += (f & 0x02) != 0
        c_rst += (f & 0x04) != 0
        c_psh += (f & 0x08) != 0
        c_ack += (f & 0x10) != 0
        c_urg += (f & 0x20) != 0
    of = o + _O_FLAGS
    out[of], out[of + 1], out[of + 2] = float(c_fin), float(c_syn), float(c_rst)
    out[of + 3], out[of + 4], out[of + 5] = float(c_psh), float(c_ack), float(c_urg)
    # --- SPLT
    k = min(_SPLT_N, n)
    os_ = o + _O_SPLT
    for i in range(_SPLT_N):
        out[os_ + i] = float(size[i] * dirn[i]) if i < k else 0.0
        out[os_ + _SPLT_N + i] = (t[i] - t[i - 1]) if 0 < i < k else 0.0


@jit(cache=True)
def _bursts(
    t: F64, dirn: I8, pay: I64, n: int, span: float, out: F64, o: int, sf: F64, si: I64, hist: I64
) -> None:
    srt = sf[1]  # summary scratch
    w4 = sf[2]  # server->client data times, later client->server data times
    w5, w6 = sf[3], sf[4]  # burst start / end times
    prev_end, requests, sizes, durations, gaps = sf[5], sf[6], sf[7], sf[8], sf[9]
    wi = si[0]  # server->client payloads, later cumulative client->server payload
    wi2 = si[1]  # burst payload sums
    idx_start, idx_prev = si[2], si[3]
    nd = 0
    for i in range(n):
        if dirn[i] == -1 and pay[i] > 0:
            w4[nd] = t[i]
            wi[nd] = pay[i]
            nd += 1
    if nd == 0:
        for i in range(22):
            out[o + i] = 0.0
        return
    # bursts: sizes (int sums) into wi2, start/end times into w5/w6
    nb_ = 0
    acc = wi[0]
    w5[0] = w4[0]
    for i in range(1, nd):
        if w4[i] - w4[i - 1] > _BURST_GAP:
            wi2[nb_] = acc
            w6[nb_] = w4[i - 1]
            nb_ += 1
            w5[nb_] = w4[i]
            acc = 0
        acc += wi[i]
    wi2[nb_] = acc
    w6[nb_] = w4[nd - 1]
    nb_ += 1
    # requests: upstream payload between the previous burst's end and this burst's start
    nu = 0
    for i in range(n):
        if dirn[i] == 1 and pay[i] > 0:
            w4[nu] = t[i]
            wi[nu + 1] = pay[i]
            nu += 1
    wi[0] = 0
    for i in range(nu):
        wi[i + 1] += wi[i]  # cumulative upstream bytes: cum[0] = 0
    # keys: burst starts, then previous ends (-inf first)
    _searchsorted_right(w4, nu, w5, nb_, idx_start)
    prev_end[0] = -np.inf
    for j in range(1, nb_):
        prev_end[j] = w6[j - 1]
    _searchsorted_right(w4, nu, prev_end, nb_, idx_prev)
    n_req = 0
    for j in range(nb_):
        requests[j] = float(wi[idx_start[j]] - wi[idx_prev[j]])
        if requests[j] != 0.0:
            n_req += 1
    for j in range(nb_):
        sizes[j] = float(wi2[j])
        durations[j] = w6[j] - w5[j]
    for j in range(nb_ - 1):
        gaps[j] = w5[j + 1] - w6[j]
    span_b = max(span, 1e-3)
    out[o] = float(nb_)
    out[o + 1] = nb_ / span_b
    _summary(sizes, nb_, srt, hist, out, o + 2, 2)
    mean = out[o + 4]
    std = out[o + 5]
    out[o + 7] = std / mean if mean > 0 else 0.0
    _summary(durations, nb_, srt, hist, out, o + 8, 3)
    _summary(gaps, nb_ - 1, srt, hist, out, o + 11, 4)
    _summary(requests, nb_, srt, hist, out, o + 15, 3)
    out[o + 18] = float(n_req)
    out[o + 19] = sizes[0]
    out[o + 20] = durations[0]
    out[o + 21] = _sum(gaps, nb_ - 1) / span_b


# ---------------------------------------------------------------------------------------
# drivers


@jit(cache=True)
def _scratch(m: int) -> tuple[F64, I64, I64, F64, F64, I64, I8, I64, I64]:
    """(float scratch rows, int scratch rows, bucket counts, t, t2, size, direction,
    flags, payload)."""
    return (
        np.empty((10, m), np.float64),
        np.empty((4, m), np.int64),
        np.empty(_BUCKETS if m > _BUCKET_MIN else 0, np.int64),
        np.empty(m, np.float64),
        np.empty(m, np.float64),
        np.empty(m, np.int64),
        np.empty(m, np.int8),
        np.empty(m, np.int64),
        np.empty(m, np.int64),
    )


@jit(
    "none(float64[::1], int64[::1], int8[::1], int64[::1], int64[::1], int64[::1], "
    "float64[::1], float64[::1], float64[:, ::1])",
    cache=True,
    nogil=True,
)
def _flows_kernel(
    ts: F64,
    size: I64,
    dirn: I8,
    flags: I64,
    pay: I64,
    offsets: I64,
    first_ts: F64,
    horizons: F64,
    out: F64,
) -> None:
    nf = offsets.shape[0] - 1
    longest = 1
    for j in range(nf):
        longest = max(longest, offsets[j + 1] - offsets[j])
    sf, si, hist, tv, tt, sv, dv, fv, pv = _scratch(longest + 1)
    for j in range(nf):
        a = offsets[j]
        n = offsets[j + 1] - a
        base = first_ts[j]
        last = -np.inf
        first = np.inf
        for i in range(n):
            tv[i] = ts[a + i] - base
            if tv[i] > last:
                last = tv[i]
            if tv[i] < first:
                first = tv[i]
        if n == 0:
            last = 0.0
        row = out[j]
        _view(tv, size[a:], dirn[a:], flags[a:], pay[a:], n, last, row, 0, sf, si, hist)
        for hk in range(horizons.shape[0]):
            h = horizons[hk]
            o = N_FEATURES * (hk + 1)
            if first >= 0.0 and last < h:
                # every packet is inside the snapshot and its span is the flow's: the same
                # view, so the same values
                for c in range(N_FEATURES):
                    row[o + c] = row[c]
                continue
            m = 0
            # snapshot: packets with 0 <= t < h, times shifted by the start (0.0)
            for i in range(n):
                if tv[i] >= 0.0 and tv[i] < h:
                    tt[m] = tv[i] - 0.0
                    sv[m] = size[a + i]
                    dv[m] = dirn[a + i]
                    fv[m] = flags[a + i]
                    pv[m] = pay[a + i]
                    m += 1
            stop = last if not last > h else h
            _view(tt, sv, dv, fv, pv, m, max(stop - 0.0, 0.0), row, o, sf, si, hist)


def flow_features(
    ts: F64,
    size: I64,
    dirn: I8,
    flags: I64,
    pay: I64,
    offsets: I64,
    first_ts: F64,
    horizons: tuple[float, ...],
) -> F64:
    """Feature rows of whole flows and their early snapshots.

    Entries of flow ``j`` are ``[offsets[j], offsets[j+1])`` of the per-entry arrays
    (absolute ``ts``, IP ``size``, direction ±1, TCP ``flags``, payload length ``pay``);
    ``first_ts[j]`` is the flow's first timestamp. Returns an array of shape
    ``(n_flows, N_FEATURES * (1 + len(horizons)))``: the whole-flow features, then one
    block per horizon (packets with ``0 <= t < horizon``), as the reference's
    ``FEATURE_COLUMNS`` then ``snapshot_columns(h)``. Raises nothing for consistent input.
    """
    nf = len(offsets) - 1
    out = np.empty((nf, N_FEATURES * (1 + len(horizons))), np.float64)
    hz = np.asarray(horizons, np.float64)

    def part(a: int, b: int) -> None:
        _flows_kernel(ts, size, dirn, flags, pay, offsets[a : b + 1], first_ts[a:b], hz, out[a:b])

    if nf:
        _in_two(part, nf, _split(offsets))
    return out


#: Fewer entries than this are computed in one thread (starting a second costs more).
SPLIT_ENTRIES = 1 << 18


def _split(offsets: I64) -> int:
    """Where to cut the flows ``offsets`` describes into two runs of about as many entries
    each, one per thread (the kernels release the GIL); 0 = do not cut."""
    nf = len(offsets) - 1
    if nf < 2 or offsets[-1] - offsets[0] < SPLIT_ENTRIES:
        return 0
    half = (int(offsets[0]) + int(offsets[-1])) // 2
    return min(max(int(np.searchsorted(offsets, half)), 1), nf - 1)


def _in_two(part: Callable[[int, int], None], nf: int, cut: int) -> None:
    """``part(0, nf)``; or, with a ``cut``, ``part(cut, nf)`` in a second thread while this
    one runs ``part(0, cut)``."""
    if not cut:
        part(0, nf)
        return
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(part, cut, nf)
        part(0, cut)
        later.result()


@jit(
    "UniTuple(int64[::1], 4)(float64[::1], int64[::1], float64[::1], float64[::1], float64)",
    cache=True,
    nogil=True,
)
def _windows_plan(
    ts: F64, offsets: I64, first_ts: F64, last_ts: F64, window: float
) -> tuple[I64, I64, I64, I64]:
    """Window index of every entry (-1: in no window) and the (flow, window) pairs that
    have entries: returns (entry window, entry order, view flow, view window)."""
    n_all = ts.shape[0]
    kk = np.full(n_all, -1, np.int64)
    order = np.empty(n_all, np.int64)
    views_f = np.empty(n_all, np.int64)
    views_k = np.empty(n_all, np.int64)
    nv = 0
    nf = offsets.shape[0] - 1
    for j in range(nf):
        a = offsets[j]
        b = offsets[j + 1]
        base = first_ts[j]
        n_windows = max(1.0, math.ceil((last_ts[j] - base) / window + 1e-12))
        monotone = True
        prev_k = -1
        for i in range(a, b):
            tt = ts[i] - base
            if not tt >= 0.0:
                continue
            k = math.floor(tt / window)
            if k >= n_windows + 1.0:
                continue
            ki = int(k)
            while ki > 0 and tt < ki * window:
                ki -= 1
            while tt >= (ki + 1) * window:
                ki += 1
            if ki >= n_windows:
                continue
            kk[i] = ki
            if ki < prev_k:
                monotone = False
            prev_k = ki
        seg = kk[a:b]
        if monotone:
            for i in range(b - a):
                order[a + i] = a + i
        else:
            perm = np.argsort(seg, kind="mergesort")
            for i in range(b - a):
                order[a + i] = a + perm[i]
        last_k = -1
        for i in range(a, b):
            ki = kk[order[i]]
            if ki >= 0 and ki != last_k:
                views_f[nv] = j
                views_k[nv] = ki
                nv += 1
                last_k = ki
    return kk, order, views_f[:nv].copy(), views_k[:nv].copy()


@jit(
    "none(float64[::1], int64[::1], int8[::1], int64[::1], int64[::1], int64[::1], "
    "float64[::1], float64, int64[::1], int64[::1], float64[:, ::1])",
    cache=True,
    nogil=True,
)
def _windows_kernel(
    ts: F64,
    size: I64,
    dirn: I8,
    flags: I64,
    pay: I64,
    offsets: I64,
    first_ts: F64,
    window: float,
    kk: I64,
    order: I64,
    out: F64,
) -> None:
    nf = offsets.shape[0] - 1
    longest = 1
    for j in range(nf):
        longest = max(longest, offsets[j + 1] - offsets[j])
    sf, si, hist, tv, _tt, sv, dv, fv, pv = _scratch(longest + 1)
    row = 0
    for j in range(nf):
        a = offsets[j]
        b = offsets[j + 1]
        base = first_ts[j]
        last = -np.inf
        for i in range(a, b):
            tt = ts[i] - base
            if tt > last:
                last = tt
        p = a
        while p < b:
            ki = kk[order[p]]
            if ki < 0:
                p += 1
                continue
            start = ki * window
            end = (ki + 1) * window
            m = 0
            # The view is every entry of window ki. Entries in no window (-1: before the
            # flow's start or past its last window, when times go backwards) may sit among
            # them in arrival order (the plan only sorts when windows go backwards); they
            # must not split the view, or this writes more rows than the plan counted.
            while p < b and (kk[order[p]] == ki or kk[order[p]] < 0):
                e = order[p]
                p += 1
                if kk[e] < 0:
                    continue
                tv[m] = (ts[e] - base) - start
                sv[m] = size[e]
                dv[m] = dirn[e]
                fv[m] = flags[e]
                pv[m] = pay[e]
                m += 1
            stop = last if not last > end else end
            _view(tv, sv, dv, fv, pv, m, max(stop - start, 0.0), out[row], 0, sf, si, hist)
            row += 1


def window_views(
    ts: F64, offsets: I64, first_ts: F64, last_ts: F64, window: float
) -> tuple[I64, I64, I64, I64]:
    """Plan the non-empty (flow, window) views: returns (entry window index, entry order,
    view flow index, view window index); windows as the reference numbers them
    (``k * window <= t < (k + 1) * window``, ``k < ceil(duration / window)``)."""
    return _windows_plan(ts, offsets, first_ts, last_ts, float(window))


def window_features(
    ts: F64,
    size: I64,
    dirn: I8,
    flags: I64,
    pay: I64,
    offsets: I64,
    first_ts: F64,
    window: float,
    plan: tuple[I64, I64, I64, I64],
) -> F64:
    """Feature rows of the views planned by :func:`window_views`, in plan order."""
    kk, order, views_f, _views_k = plan
    out = np.empty((len(views_f), N_FEATURES), np.float64)
    nf = len(offsets) - 1

    def part(a: int, b: int) -> None:
        lo, hi = np.searchsorted(views_f, [a, b])  # the views of flows a..b-1
        _windows_kernel(
            ts,
            size,
            dirn,
            flags,
            pay,
            offsets[a : b + 1],
            first_ts[a:b],
            float(window),
            kk,
            order,
            out[lo:hi],
        )

    if len(views_f):
        _in_two(part, nf, _split(offsets))
    return out
