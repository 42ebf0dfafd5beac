"""Options and helpers shared by the `shortflow` sub-command modules.

:mod:`classifier.cli.app` builds the parser and registers the sub-commands that live in
other modules (:mod:`classifier.cli.live`, :mod:`classifier.model.cli`, :mod:`training.cli`,
...); those modules take their shared options from here, so none of them imports
:mod:`classifier.cli.app` back.
"""

from __future__ import annotations

import argparse
import sys

from classifier.errors import ShortflowError

__all__ = ["add_flow_options", "featurize_config", "engine", "show_progress"]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _horizons(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected seconds like 3,10; got {text!r}") from exc
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("snapshot horizons must be positive")
    return values


ENGINE_CHOICES = ("fast", "reference")  # classifier.features.engine.ENGINES, without its import
BACKEND_CHOICES = ("builtin", "pyshark", "tshark")
_BACKEND_ALIASES = {"dpkt": "builtin", "native": "builtin"}  # older names, still accepted


def _backend(text: str) -> str:
    """``--backend``: one of :data:`BACKEND_CHOICES`; an older name of the built-in reader
    (``dpkt``, ``native``) is read as ``builtin``."""
    name = _BACKEND_ALIASES.get(text, text)
    if name not in BACKEND_CHOICES:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(BACKEND_CHOICES)})"
        )
    return name


def add_flow_options(p: argparse.ArgumentParser, *, snapshots: bool = True) -> None:
    """The options for reading captures and making flows. ``snapshots=False``: for a
    command that shows no snapshot columns, ``--snapshots`` is not listed and defaults to
    ``None``, so the command can refuse it when given."""
    g = p.add_argument_group("reading and flows")
    g.add_argument(
        "--backend",
        type=_backend,
        default="builtin",
        metavar="{" + ",".join(BACKEND_CHOICES) + "}",
        help="capture reader: builtin (the default), or pyshark/tshark (read through "
        "tshark; slower, reference engine only)",
    )
    g.add_argument(
        "--engine",
        choices=list(ENGINE_CHOICES),
        default=None,
        help="fast (the default with the builtin backend): the compiled featurizer; "
        "reference: the plain Python one; same table",
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        help="continue past damaged records and report how many were skipped; "
        "skip files that cannot be read as captures, one line each (an error "
        "only when none could be read)",
    )
    g.add_argument("--idle-timeout", type=_positive_float, default=120.0, metavar="S")
    g.add_argument("--active-timeout", type=_positive_float, default=1800.0, metavar="S")
    g.add_argument(
        "--max-flows",
        type=int,
        default=500_000,
        metavar="N",
        help="hard cap on flows held at once; the least active is evicted",
    )
    g.add_argument(
        "--max-packets",
        type=int,
        default=1_000_000,
        metavar="N",
        help="a flow holding N packets ends and the next packet starts a new "
        "one (bounds memory on very long flows; 0 = no bound)",
    )
    g.add_argument(
        "--resegment-mss",
        type=int,
        default=None,
        metavar="BYTES",
        help="split offload-coalesced packets (GRO/TSO) into packets of this size",
    )
    if snapshots:
        g.add_argument(
            "--snapshots",
            type=_horizons,
            default=(3.0, 10.0),
            metavar="S,S",
            help="early-snapshot horizons in seconds (default 3,10)",
        )
    else:
        g.add_argument("--snapshots", type=_horizons, default=None, help=argparse.SUPPRESS)
    g.add_argument(
        "--windows",
        type=_positive_float,
        default=None,
        metavar="S",
        help="one row per (flow, window of S seconds) instead of one per flow",
    )


def featurize_config(args: argparse.Namespace):
    from classifier.features.featurize import FeaturizeConfig
    from classifier.flows import FlowConfig

    try:
        flow = FlowConfig(
            idle_timeout=args.idle_timeout,
            active_timeout=args.active_timeout,
            max_flows=args.max_flows,
            resegment_mss=args.resegment_mss,
            max_packets=args.max_packets or None,
        )
    except ValueError as exc:
        raise ShortflowError(f"bad flow option: {exc}") from exc
    return FeaturizeConfig(flow=flow, snapshots=args.snapshots, window=args.windows)


def engine(args: argparse.Namespace) -> str:
    """The engine for ``--engine`` and ``--backend``, as
    :func:`classifier.features.engine.choose_engine` decides: without ``--engine``, the
    fast one where it can read (the builtin backend); ``--engine fast`` with another
    backend is an error."""
    from classifier.features.engine import choose_engine

    asked = args.engine if args.engine is not None else "fast"
    return choose_engine(asked, args.backend, strict=args.engine is not None)


def show_progress(quiet: bool = False) -> bool:
    """Progress bars go to stderr when it is a terminal (and not ``-q``): a log file or a
    pipe gets none."""
    return not quiet and sys.stderr.isatty()
