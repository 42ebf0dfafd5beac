"""`shortflow ...`: parses arguments and calls the modules; errors become one line + exit 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from classifier.cli.options import add_flow_options, engine, featurize_config, show_progress
from classifier.errors import ShortflowError

__all__ = ["main", "build_parser"]

log = logging.getLogger("shortflow")

Handler = Callable[[argparse.Namespace], int]


def _cmd_featurize(args: argparse.Namespace) -> int:
    from classifier.features.report import capture_files, featurize_to

    config = featurize_config(args)
    if args.jobs < 1:
        raise ShortflowError("--jobs must be at least 1")
    rows, columns, summary = featurize_to(
        capture_files(args.captures),
        config,
        args.output,
        engine=engine(args),
        backend=args.backend,
        skip_bad=args.skip_bad,
        progress=show_progress(args.quiet),
        jobs=args.jobs,
        scheduler=args.scheduler,
    )
    print(summary, file=sys.stderr)
    print(f"wrote {rows} rows x {columns} columns to {args.output}", file=sys.stderr)
    return 0


def _cmd_flows(args: argparse.Namespace) -> int:
    from classifier.features.report import featurize_files, flows_text

    if args.snapshots is not None:
        raise ShortflowError(
            "flows shows no snapshot columns, so --snapshots does nothing "
            "here; use `shortflow featurize --snapshots` or "
            "`shortflow classify --at`"
        )
    args.snapshots = ()  # nothing shows them: not computed
    if args.limit < 1:
        raise ShortflowError(f"--limit must be at least 1, got {args.limit}")
    config = featurize_config(args)
    table, summary = featurize_files(
        [args.capture],
        config,
        backend=args.backend,
        skip_bad=args.skip_bad,
        progress=False,
        engine=engine(args),
    )
    print(flows_text(table, limit=args.limit))
    print(summary, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shortflow",
        description="Find short-form video (Shorts, Reels, TikTok) in encrypted traffic.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("featurize", help="captures -> one feature row per flow (or window)")
    p.add_argument(
        "captures",
        nargs="+",
        type=Path,
        metavar="CAPTURE|DIR",
        help="capture files, or directories searched for them (recursively)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output table: .parquet or .csv (written as flows end, so memory "
        "holds the active flows, not the table)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="featurize N files at once (worker processes, or Dask workers)",
    )
    p.add_argument(
        "--scheduler",
        default="local",
        metavar="local|dask|ADDRESS",
        help="local: worker processes on this machine; dask: a local Dask "
        "cluster of --jobs workers; or a Dask scheduler's address "
        "(tcp://host:8786) whose workers see the same paths",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar (there is none either when stderr is not a terminal)",
    )
    add_flow_options(p)
    p.set_defaults(handler=_cmd_featurize)

    p = sub.add_parser("flows", help="print the flows of a capture as a readable table")
    p.add_argument("capture", type=Path)
    p.add_argument(
        "--limit", type=int, default=50, help="show at most this many flows (rows, with --windows)"
    )
    add_flow_options(p, snapshots=False)
    p.set_defaults(handler=_cmd_flows)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Sub-command groups that live in other modules (model, API, live, training)."""
    registrars = []
    for module in (
        "classifier.model.cli",
        "classifier.api.cli",
        "classifier.cli.live",
        "classifier.cli.control",
        "classifier.cli.recordings",
        "classifier.enforce.export_cli",
        "training.cli",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that part is not installed (e.g. a router without training/)
            raise
        registrars.append(mod.register)
    return registrars


def main(argv: Sequence[str] | None = None) -> int:
    # numpy's OpenBLAS starts a busy-waiting thread per core when numpy is imported;
    # nothing in shortflow does linear algebra, so one thread saves ~0.1 CPU s a run
    # (a value set by the user wins)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    # -v: debug for everything. A command may log its own INFO lines by default
    # (``own_log_level``: live mode tells what it does); its -q keeps warnings and errors only.
    command_level: int | None = getattr(args, "own_log_level", None)
    if command_level is not None and args.verbose and args.quiet:
        parser.error("-v (debug) and -q (warnings and errors only) contradict: choose one")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="shortflow: %(levelname)s: %(message)s",
    )
    if command_level is not None and not args.verbose:
        logging.getLogger("classifier").setLevel(logging.WARNING if args.quiet else command_level)
    # -v is for shortflow's own messages: numba's debug output (compiler IR dumps, tens
    # of thousands of lines when kernels compile) would bury them
    logging.getLogger("numba").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ShortflowError as exc:
        print(f"shortflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shortflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
