"""`shortflow train-sessions` and `shortflow evaluate-sessions`: the session model."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.cli.options import show_progress
from classifier.enforce.policy import Policy

__all__ = ["register"]

_DEFAULT_SIM = 200
_BLOCK_SECONDS = Policy().block_seconds


def _tables(args: argparse.Namespace, address_names: Any = None) -> Any:
    import pandas as pd

    from classifier.features.session import SessionConfig
    from training.sessions import session_rows, simulated_rows

    config = SessionConfig(use_names=not args.no_names)
    real = session_rows(
        args.manifests,
        config,
        jobs=args.jobs,
        progress=show_progress(args.quiet),
        address_names=address_names,
    )
    parts = [real]
    if args.sim:
        parts.append(simulated_rows(args.sim, args.seed, config))
    return config, pd.concat(parts, ignore_index=True)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _agreement(text: str) -> Any:
    """``K/N@T``: short-form when K of the last N windows reach T."""
    from classifier.model.session_model import Agreement

    try:
        kn, thr = text.split("@")
        k, n = (int(x) for x in kn.split("/"))
        rule = Agreement(k, n, float(thr))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected K/N@T such as 3/5@0.8, got {text!r}") from exc
    if not (1 <= rule.k <= rule.n and 0 < rule.threshold <= 1):
        raise argparse.ArgumentTypeError(f"need 1 <= K <= N and 0 < T <= 1, got {text!r}")
    return rule


def _evaluate(table: Any, names: list[str], rule: Any, block_seconds: int) -> dict[str, Any]:
    from training.sessions import CANDIDATES, leave_one_source_out, source_scores

    return {
        n: source_scores(
            leave_one_source_out(table, CANDIDATES[n], rule=rule), block_seconds=block_seconds
        )
        for n in names
    }


def _counts(table: Any) -> str:
    counts = table.groupby(["source", "label"]).size()
    return ", ".join(f"{s}/{lab} {n}" for (s, lab), n in counts.items())


def _realism(table: Any, synthetic: str, what: str) -> list[str]:
    """How far the ``synthetic`` windows are from the real ones, per class, then per class
    and real source (which source's windows are easiest to tell apart); none without
    ``synthetic`` rows."""
    from training.sessions import SYNTHETIC_SOURCES, realism_auc

    auc = realism_auc(table, synthetic)
    if not auc:
        return []
    sources = sorted(set(table["source"]) - set(SYNTHETIC_SOURCES))
    per_source = {src: realism_auc(table, synthetic, source=src) for src in sources}
    by_class = [
        f"{label}: "
        + ", ".join(f"{src} {aucs[label]:.2f}" for src, aucs in per_source.items() if label in aucs)
        for label in auc
    ]
    return [
        f"{what} vs real session windows, ROC AUC per class (grouped 5-fold CV; 0.5 = "
        "indistinguishable): " + ", ".join(f"{k} {v:.2f}" for k, v in auc.items()),
        "",
        "per real source: " + "; ".join(by_class),
        "",
    ]


def _spread(args: argparse.Namespace, table: Any, name: str, config: Any, first: Any) -> list[str]:
    """The ``name`` candidate's figures over ``args.seeds`` simulation seeds from
    ``args.seed`` on, each figure's range per held-out source: ``first`` holds the
    scores of ``args.seed`` (``table``'s own), the other seeds are refitted."""
    import pandas as pd

    from training.seed_spread import seed_scores, spread_markdown
    from training.sessions import CANDIDATES

    seeds = range(args.seed, args.seed + args.seeds)
    real = table[table["source"] != "sim"]
    more = seed_scores(
        real, CANDIDATES[name], seeds[1:], args.sim, config, args.agreement, args.block_seconds
    )
    scores = pd.concat([first.assign(seed=args.seed), more], ignore_index=True)
    return [
        f"### {name}: lowest - highest over simulation seeds {seeds[0]}-{seeds[-1]} "
        "(leave one source out, refitted per seed)",
        "",
        spread_markdown(scores),
        "",
    ]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.address_names import load_address_names
    from training.sessions import (
        CANDIDATES,
        scores_markdown,
        sim_to_real,
        source_scores,
    )

    if args.seeds > 1 and not args.sim:
        print("shortflow: --seeds needs simulated sessions (--sim N, N > 0)", file=sys.stderr)
        return 2
    path = args.names_by_address
    address_names = load_address_names(path) if path is not None else None
    config, table = _tables(args, address_names)
    names = list(CANDIDATES) if args.candidate == "all" else [args.candidate]
    parts = [f"session windows: {_counts(table)}", ""]
    for synthetic, what in (("sim", "simulated"), ("lab", "traffic-lab")):
        parts += _realism(table, synthetic, what)
    rule = args.agreement
    evaluated = _evaluate(table, names, rule, args.block_seconds)
    for name, scores in evaluated.items():
        names_used = "withheld" if args.no_names else "used"
        if args.names_by_address is not None:
            names_used += f", nameless flows named by address ({args.names_by_address.name})"
        parts += [
            f"### {name} (leave one source out; names {names_used}; short-form when "
            f"{rule.k} of the last {rule.n} windows reach {rule.threshold:g}; blocks of "
            f"{args.block_seconds} s)",
            "",
            scores_markdown(scores),
            "",
        ]
    if args.seeds > 1:
        parts += _spread(args, table, names[0], config, evaluated[names[0]])
    transfer = sim_to_real(table, CANDIDATES[names[0]], rule)
    if transfer is not None:
        parts += [
            f"### {names[0]}: trained on simulated sessions only, tested on every real source",
            "",
            scores_markdown(source_scores(transfer, block_seconds=args.block_seconds)),
            "",
        ]
    if args.flows:
        from classifier.model.artifact import load_model
        from training.flow_scores import flow_byte_scores, flow_scores_markdown

        flows = flow_byte_scores(
            args.manifests,
            table,
            CANDIDATES[names[0]],
            load_model(args.flow_model),
            config,
            rule,
            address_names=address_names,
        )
        parts += [
            f"### {names[0]}: bytes of each held-out source by the final label of "
            "their flow (what `shortflow classify` shows; sessions judged with "
            "hindsight; the flow model is not refitted per fold)",
            "",
            flow_scores_markdown(flows),
            "",
        ]
    text = "\n".join(parts)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    print(text)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from classifier.features.session import SESSION_FEATURES
    from classifier.model.session_model import save_session_model
    from training.sessions import CANDIDATES, CHOSEN, scores_markdown

    config, table = _tables(args)
    scores = _evaluate(table, [CHOSEN], args.agreement, _BLOCK_SECONDS)[CHOSEN]
    estimator = CANDIDATES[CHOSEN]().fit(table[list(SESSION_FEATURES)], table["label"])
    created = datetime.now(UTC).isoformat(timespec="seconds")
    rule = args.agreement
    metrics = {
        "leave_one_source_out": scores.to_dict(orient="records"),
        "agreement": {"k": rule.k, "n": rule.n, "threshold": rule.threshold},
        "training_windows": {
            f"{s}/{lab}": int(n)
            for (s, lab), n in table.groupby(["source", "label"]).size().items()
        },
        "simulated_sessions_per_kind": args.sim,
        "seed": args.seed,
    }
    save_session_model(
        estimator,
        args.output,
        name=args.name,
        config=config,
        estimator_name=CHOSEN,
        created=created,
        metrics=metrics,
    )
    print(scores_markdown(scores))
    print(f"wrote the session model to {args.output} ({_counts(table)})", file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    p.add_argument(
        "--sim",
        type=int,
        default=_DEFAULT_SIM,
        metavar="N",
        help=f"simulated sessions per kind added to training (default {_DEFAULT_SIM}; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated sessions")
    p.add_argument(
        "--no-names",
        action="store_true",
        help="withhold every name: group flows by server network only",
    )
    p.add_argument("--jobs", type=int, default=1, help="featurize processes")
    p.add_argument(
        "--agreement",
        type=_agreement,
        default="3/5@0.8",
        metavar="K/N@T",
        help="short-form when K of a session's last N windows reach probability "
        "T (the policy's [agreement]; default 3/5@0.8)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-sessions`` and ``evaluate-sessions``."""
    t = sub.add_parser(
        "train-sessions", help="fit the session model (client activity over time) and save it"
    )
    _common(t)
    t.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="model directory (session.joblib + session.json are written)",
    )
    t.add_argument("--name", default="session", help="model name in session.json")
    t.set_defaults(handler=_cmd_train)
    e = sub.add_parser(
        "evaluate-sessions", help="leave-one-source-out figures of the session-model candidates"
    )
    _common(e)
    e.add_argument(
        "--candidate",
        choices=["all", "logreg-shape", "logreg", "hgb", "et"],
        default="all",
        help="candidate(s) to evaluate; the first one is also "
        "trained on simulated sessions alone and tested on all real ones",
    )
    e.add_argument(
        "--flows",
        action="store_true",
        help="also classify every capture of each held-out source as `shortflow "
        "classify` does and report its bytes by final flow label",
    )
    e.add_argument(
        "--flow-model",
        type=Path,
        default=None,
        metavar="DIR",
        help="flow model for --flows (default: the shipped one)",
    )
    e.add_argument(
        "--block-seconds",
        type=int,
        default=_BLOCK_SECONDS,
        metavar="S",
        help="how long a block made by a short-form verdict lasts, for the 'under a block' "
        f"columns (the policy's block_seconds; default {_BLOCK_SECONDS})",
    )
    e.add_argument(
        "--names-by-address",
        type=Path,
        default=None,
        metavar="FILE",
        help="name nameless flows by their server's network (TOML: [[service]] name, "
        "networks), to estimate what names would change; an evaluation aid "
        "(datasets/names-by-address.toml)",
    )
    e.add_argument(
        "--seeds",
        type=_positive,
        default=1,
        metavar="N",
        help="also refit the first candidate with N simulation seeds (--seed, --seed + 1, "
        "...) and print each figure's lowest and highest value (default 1: off)",
    )
    e.add_argument("-o", "--output", type=Path, default=None, help="also write to this file")
    e.set_defaults(handler=_cmd_evaluate)
