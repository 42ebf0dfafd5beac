"""`shortflow classify`: verdicts for every flow of a capture, a per-client summary, and
each client's activity over time from the session model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # registering the command must not import pandas (every CLI run does)
    import pandas as pd

    from classifier.model.session_model import SessionModel

__all__ = ["register", "verdicts_for_capture", "summary_lines"]

_SHOWN = [
    "client",
    "client_port",
    "server",
    "server_port",
    "service",
    "name",
    "label",
    "probability",
    "decided_by",
    "decision_window",
    "reason",
]
_REASON_CHARS = 60  # the table's reason is cut to this; --json and --csv carry it whole


def verdicts_for_capture(
    args: argparse.Namespace,
) -> tuple[pd.DataFrame, pd.DataFrame, str, pd.DataFrame | None]:
    """Featurize ``args.capture`` and classify it; returns verdicts (each whole flow decided
    by the session model where it carried media through judged windows, see
    :mod:`classifier.model.combine`), the client summary of those verdicts, the featurize
    summary line, and the activity timeline (None without a session model or with
    ``--no-timeline``)."""
    from classifier.capture.reader import is_builtin
    from classifier.cli.options import engine, featurize_config
    from classifier.features.report import featurize_files
    from classifier.model.loading import load_flow_model
    from classifier.model.predict import classify_table, client_summary

    model = load_flow_model(args.model)
    if args.at is not None:
        args.snapshots = _snapshots_for(args.at, args.snapshots, model.info.decision_windows)
    config = featurize_config(args)
    table, summary = featurize_files(
        [args.capture], config, backend=args.backend, skip_bad=args.skip_bad, engine=engine(args)
    )
    verdicts = classify_table(model, table, horizon=args.at)
    session_model = _session_model(args)
    if session_model is None:
        return verdicts, client_summary(verdicts), summary, None
    from classifier.model.timeline import with_sessions

    verdicts, spans = with_sessions(
        session_model,
        args.capture,
        verdicts,
        config,
        args.at,
        skip_bad=args.skip_bad,
        same_flows=is_builtin(args.backend),
    )
    return verdicts, client_summary(verdicts), summary, spans


def _snapshots_for(
    at: float, snapshots: tuple[float, ...], decision_windows: list[float | None]
) -> tuple[float, ...]:
    """The snapshot horizons to compute for ``--at AT``: ``snapshots`` plus AT. Raises
    :class:`ShortflowError` (one line naming the valid values) when the model has no
    decision window of AT seconds."""
    from classifier.errors import ShortflowError

    known = sorted(w for w in decision_windows if w is not None)
    if not any(math.isclose(at, w) for w in known):
        valid = ", ".join(f"{w:g}" for w in known) or "none (whole flows only)"
        raise ShortflowError(
            f"--at {at:g}: the model has no {at:g} s decision window; valid values: {valid}"
        )
    return snapshots if any(math.isclose(at, s) for s in snapshots) else (*snapshots, at)


def _session_model(args: argparse.Namespace) -> SessionModel | None:
    """The model directory's session model, or None when it has none (or
    ``--no-timeline``)."""
    from classifier.model.loading import load_session

    return None if args.no_timeline else load_session(args.model)


def summary_lines(clients: pd.DataFrame) -> list[str]:
    """ "client 10.0.0.5: 12 short-form flows, 63% of video bytes" per client."""
    return [
        f"client {r.client}: {r.short_form_flows} short-form flows, {r.long_form_flows} "
        f"long-form flows, short-form is {r.short_form_share_of_video_bytes:.0%} of video bytes"
        for r in clients.itertuples()
    ]


def _short_reason(reason: str) -> str:
    text = str(reason)
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _json_doc(
    verdicts: pd.DataFrame,
    clients: pd.DataFrame,
    spans: pd.DataFrame | None,
    *,
    all_columns: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """flows, clients and timeline as ``POST /v1/captures:classify`` gives them (the fields
    of FlowVerdict, ClientSummary and TimelineSpan); ``all_columns``: every column of the
    verdict table for each flow (the features too). Flows in flow_id order."""
    from classifier.api.routers.captures import as_records
    from classifier.api.schemas import ClientSummary, FlowVerdict, TimelineSpan

    order = [c for c in ("flow_id", "window_start") if c in verdicts.columns]
    verdicts = verdicts.sort_values(order, kind="stable") if order else verdicts  # as the API
    flows = (
        json.loads(verdicts.to_json(orient="records"))
        if all_columns
        else [r.model_dump(mode="json") for r in as_records(verdicts, FlowVerdict)]
    )
    timeline = [] if spans is None else as_records(spans, TimelineSpan)
    return {
        "flows": flows,
        "clients": [r.model_dump(mode="json") for r in as_records(clients, ClientSummary)],
        "timeline": [r.model_dump(mode="json") for r in timeline],
    }


def _cmd_classify(args: argparse.Namespace) -> int:
    from classifier.errors import ShortflowError
    from classifier.model.timeline import timeline_lines

    if args.all_columns and not args.json:
        raise ShortflowError("--all-columns goes with --json (--csv always has every column)")
    verdicts, clients, summary, spans = verdicts_for_capture(args)
    if args.json:
        json.dump(
            _json_doc(verdicts, clients, spans, all_columns=args.all_columns), sys.stdout, indent=1
        )
        print()
    elif args.csv:
        verdicts.to_csv(sys.stdout, index=False)
    else:
        shown = verdicts.sort_values("probability", ascending=False)[_SHOWN]
        shown = shown.assign(
            name=shown["name"].fillna("-"), reason=shown["reason"].map(_short_reason)
        )
        print(shown.to_string(index=False) if not shown.empty else "(no TCP/UDP flows)")
        print()
        print("\n".join(summary_lines(clients)))
        if spans is not None:
            print()
            print(
                "activity over time (session model: each client's traffic per service or "
                "server network, 60 s windows every 10 s; judged with hindsight: a "
                "short-form run starts with the windows that led to it, and video from "
                "another server network during it is short-form too, where live mode "
                "decides a few windows later):"
            )
            print("\n".join(timeline_lines(spans)))
    print(summary, file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from classifier.cli.options import add_flow_options

    p = sub.add_parser(
        "classify",
        help="label every flow of a capture short-form / "
        "long-form / other, with probability and reason",
    )
    p.add_argument("capture", type=Path)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory (default: the model shipped with shortflow)",
    )
    p.add_argument(
        "--at",
        type=float,
        default=None,
        metavar="S",
        help="decide on the early snapshot of the first S seconds (one of the "
        "model's decision windows, 1, 3, 5 or 10 for the shipped model) instead "
        "of the whole flow",
    )
    p.add_argument(
        "--no-timeline",
        action="store_true",
        help="flow model alone: no session model, so no activity timeline and "
        "every flow decided on its own",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--json",
        action="store_true",
        help="flows, clients and timeline as JSON, the records POST /v1/captures:classify returns",
    )
    out.add_argument("--csv", action="store_true", help="all columns as CSV")
    p.add_argument(
        "--all-columns",
        action="store_true",
        help="with --json: every column of each flow (the ~440 features too)",
    )
    add_flow_options(p)
    p.set_defaults(handler=_cmd_classify)
