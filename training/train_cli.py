"""`shortflow train` and `shortflow evaluate`: argument parsing only; the work is in
``training.train`` and ``training.evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from classifier.errors import ShortflowError

__all__ = ["register"]


def _featurize_config(args: argparse.Namespace):
    from classifier.features.featurize import FeaturizeConfig
    from classifier.flows import FlowConfig

    try:
        return FeaturizeConfig(
            flow=FlowConfig(resegment_mss=args.resegment_mss), snapshots=args.snapshots
        )
    except ValueError as exc:
        raise ShortflowError(f"bad featurize option: {exc}") from exc


def _cache_dir(args: argparse.Namespace) -> Path | None:
    from training.dataset import default_cache_dir

    if args.no_cache:
        return None
    return args.cache_dir or default_cache_dir()


def _cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from training.models import parse_candidates
    from training.report import comparison_markdown
    from training.train import train

    info = train(
        args.manifests,
        args.output,
        candidates=parse_candidates(args.candidates),
        config=_featurize_config(args),
        jobs=args.jobs,
        scheduler=args.scheduler,
        cache_dir=_cache_dir(args),
        n_splits=args.folds,
        seed=args.seed,
        name=args.name,
        progress=not args.quiet,
    )
    print(comparison_markdown(pd.DataFrame(info.metrics["comparison"])))
    print()
    print(
        f"chosen: {info.metrics['chosen']} ({info.estimator}); saved to {args.output} "
        f"(sha256 {info.sha256[:12]}...)",
        file=sys.stderr,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_model

    result = evaluate_model(
        args.model,
        args.manifests,
        args.output,
        jobs=args.jobs,
        scheduler=args.scheduler,
        cache_dir=_cache_dir(args),
        n_splits=args.folds,
        seed=args.seed,
        importance_repeats=args.importance_repeats,
        progress=not args.quiet,
    )
    print(f"wrote {result.report} and {len(result.figures)} figures", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _snapshots(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected seconds like 3,10; got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("snapshot horizons must be positive")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "manifests", nargs="+", type=Path, metavar="MANIFEST", help="dataset manifest CSV files"
    )
    p.add_argument(
        "--jobs", type=_positive_int, default=1, metavar="N", help="featurize N captures at once"
    )
    p.add_argument(
        "--scheduler",
        default="local",
        metavar="local|dask|ADDRESS",
        help="local processes (default), a local dask cluster, or the address "
        "of a dask scheduler (tcp://host:8786)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="featurized-capture cache (default $SHORTFLOW_CACHE/features or "
        "~/.cache/shortflow/features)",
    )
    p.add_argument("--no-cache", action="store_true", help="featurize everything again")
    p.add_argument(
        "--folds",
        type=_positive_int,
        default=5,
        help="grouped folds (by capture; fewer captures -> leave-one-out)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` sub-commands to ``sub``."""
    p = sub.add_parser(
        "train",
        help="compare candidate models by grouped cross-validation "
        "and save the best, refit on all data",
    )
    _common(p)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="model directory to write (model.joblib + model.json)",
    )
    p.add_argument(
        "--candidates",
        default="names,rf,hgb,lgbm",
        help="comma-separated candidates among names,rf,hgb,lgbm",
    )
    p.add_argument("--name", default=None, help="model name (default: the directory name)")
    p.add_argument(
        "--snapshots",
        type=_snapshots,
        default=(3.0, 10.0),
        metavar="S,S",
        help="early decision times in seconds (default 3,10)",
    )
    p.add_argument(
        "--resegment-mss",
        type=int,
        default=None,
        metavar="BYTES",
        help="split offload-coalesced packets before featurizing",
    )
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model on captures: report.md + figures")
    p.add_argument("model", type=Path, help="model directory")
    _common(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT_DIR")
    p.add_argument(
        "--importance-repeats",
        type=_positive_int,
        default=2,
        metavar="N",
        help="shuffles per feature for permutation importance",
    )
    p.set_defaults(handler=_cmd_evaluate)
