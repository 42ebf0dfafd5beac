"""The fast path's pool of active-flow entries: cutting ended flows out of its blocks."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.features.featurize_fast import _Pool


@pytest.mark.parametrize("seed", range(6))
def test_cuts_give_each_ended_flow_its_entries_in_arrival_order(seed: int) -> None:
    """Random chunks of entries of 1-40 flows, random cuts: every cut returns exactly the
    ended flows' entries (grouped in the order asked, each in arrival order), the rest
    stay for later cuts, and shrunken blocks are merged (few blocks)."""
    rng = np.random.default_rng(seed)
    pool = _Pool(block=64)
    held: dict[int, list[tuple[float, int, int, int, int]]] = {}
    stamp = 0.0
    for _ in range(60):
        n = int(rng.integers(0, 90))
        uid = rng.integers(0, 40, n).astype(np.int64)
        ts = stamp + np.arange(n, dtype=np.float64)
        stamp += n
        size, pay, flags = (rng.integers(0, 1500, n).astype(np.int64) for _ in range(3))
        dirn = rng.choice(np.array([-1, 1], np.int8), n)
        pool.append(uid, ts, size, pay, flags, dirn)
        for i in range(n):
            held.setdefault(int(uid[i]), []).append(
                (ts[i], int(size[i]), int(pay[i]), int(flags[i]), int(dirn[i]))
            )
        if rng.random() < 0.5 and held:
            ended = rng.permutation(sorted(held))[: int(rng.integers(1, len(held) + 1))]
            offsets, o_ts, o_size, o_pay, o_flags, o_dir = pool.cut(ended.astype(np.int64))
            for j, u in enumerate(ended.tolist()):
                a, b = offsets[j], offsets[j + 1]
                got = list(
                    zip(
                        o_ts[a:b].tolist(),
                        o_size[a:b].tolist(),
                        o_pay[a:b].tolist(),
                        o_flags[a:b].tolist(),
                        o_dir[a:b].tolist(),
                        strict=True,
                    )
                )
                assert got == held.pop(u)
            assert offsets[-1] == len(o_ts)
            sizes = [len(b[0]) for b in pool.blocks]  # neighbours that fit together merged
            assert all(x + y >= 64 for x, y in zip(sizes, sizes[1:], strict=False))
        assert sum(len(b[0]) for b in pool.blocks) == sum(map(len, held.values()))
