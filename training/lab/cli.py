"""``shortflow lab scenarios`` and ``shortflow lab generate ...`` (argparse wiring only)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from training.lab.conditions import PROFILES
from training.lab.scenarios import SCENARIOS

__all__ = ["add_parser", "handle"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``lab`` command group to ``subparsers``; each leaf sets ``handler=handle``."""
    lab = subparsers.add_parser(
        "lab", help="traffic lab: labeled captures from real stacks in network namespaces (root)"
    )
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    sc = sub.add_parser("scenarios", help="list the lab scenarios")
    sc.set_defaults(handler=handle)
    gen = sub.add_parser("generate", help="record sessions of one scenario (needs root)")
    gen.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    gen.add_argument("--sessions", type=int, default=1, metavar="N")
    gen.add_argument("--seed", type=int, default=0, metavar="S")
    gen.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder (pcaps + manifest.csv)",
    )
    gen.add_argument("--profile", choices=sorted(PROFILES), default="wifi")
    gen.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="session length (default: drawn per session, 20-60 s)",
    )
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(handler=handle)
    return lab


def handle(args: argparse.Namespace) -> int:
    """Run ``lab scenarios`` or ``lab generate``; prints a short summary.

    Raises:
        ScenarioError, LabError: bad arguments or a failed session (one-line messages).
    """
    if args.lab_command == "scenarios":
        width = max(len(n) for n in SCENARIOS)
        for name, text in SCENARIOS.items():
            print(f"{name:<{width}}  {text}")
        return 0
    from training.lab.generate import generate

    t0 = time.monotonic()
    rows = generate(
        args.scenario,
        args.sessions,
        args.seed,
        args.out,
        profile=args.profile,
        duration_s=args.duration,
        progress=not args.quiet,
    )
    labels = Counter(r["label"] for r in rows)
    size = sum((args.out / r["path"]).stat().st_size for r in rows)
    print(
        f"recorded {len(rows)} session(s) of {args.scenario} ({args.profile}) in "
        f"{time.monotonic() - t0:.0f} s: {size / 1e6:.1f} MB, labels "
        f"{dict(labels)}; manifest {args.out / 'manifest.csv'}"
    )
    return 0
