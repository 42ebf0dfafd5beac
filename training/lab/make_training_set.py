"""Record a larger lab set (every scenario x profiles) into a folder, for a background run.

``python -m training.lab.make_training_set --out /data/lab --sessions 8 --seed 1`` records
``sessions`` sessions per scenario, spread round-robin over the profiles (session ``i`` uses
``profiles[i % len(profiles)]``), one lab per profile, and keeps ``manifest.csv`` up to date
after every scenario, so an interrupted run keeps what it recorded. One session costs its
duration (20-60 s, drawn per session) plus about 1.5 s.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from classifier.errors import ShortflowError
from training.lab.conditions import PROFILES, get_profile
from training.lab.generate import Lab, record_sessions, sigterm_as_interrupt, write_manifest
from training.lab.scenarios import SCENARIOS, ScenarioError

__all__ = ["make_training_set", "main"]

_log = logging.getLogger(__name__)


def make_training_set(
    out_dir: Path,
    sessions: int = 8,
    seed: int = 1,
    profiles: Sequence[str] = ("wifi", "lte", "fibre"),
    scenarios: Sequence[str] | None = None,
    duration_s: float | None = None,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Record ``sessions`` sessions of each scenario; return all manifest rows.

    Raises:
        ScenarioError: unknown scenario. LabError: unknown profile, not root, failed session.
    """
    names = list(scenarios) if scenarios else list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            raise ScenarioError(f"unknown lab scenario {name!r}")
    for p in profiles:
        get_profile(p)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for j, profile in enumerate(profiles):
        indices = [i for i in range(sessions) if i % len(profiles) == j]
        if not indices:
            continue
        with Lab(profile) as lab:
            for name in names:
                t0 = time.monotonic()
                new = record_sessions(lab, name, indices, seed, out_dir, duration_s, progress)
                write_manifest(out_dir, new)
                rows += new
                _log.info(
                    "%s/%s: %d sessions in %.0f s", name, profile, len(new), time.monotonic() - t0
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI for a background run (prints one summary line)."""
    ap = argparse.ArgumentParser(prog="python -m training.lab.make_training_set")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sessions", type=int, default=8, help="per scenario (default 8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--profiles", default="wifi,lte,fibre", help=f"comma list of {', '.join(PROFILES)}"
    )
    ap.add_argument("--scenarios", default="", help="comma list (default: all)")
    ap.add_argument("--duration", type=float, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.monotonic()
    try:
        with sigterm_as_interrupt():
            rows = make_training_set(
                args.out,
                args.sessions,
                args.seed,
                [p for p in args.profiles.split(",") if p],
                [s for s in args.scenarios.split(",") if s] or None,
                args.duration,
            )
    except KeyboardInterrupt:
        print("interrupted; manifest.csv holds the sessions recorded so far", file=sys.stderr)
        return 130
    except ShortflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} sessions in {time.monotonic() - t0:.0f} s -> {args.out}/manifest.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
