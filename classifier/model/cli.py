"""`shortflow classify`: verdicts for every flow of a capture, a per-client summary, and
each client's activity over time from the session model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # registering the command must not import pandas (every CLI run does)
    import pandas as pd

    from classifier.features.session import SessionConfig
    from classifier.flows import FlowConfig
    from classifier.model.timeline import CaptureSessions

__all__ = ["register", "verdicts_for_capture", "summary_lines"]

_SHOWN = ["client", "client_port", "server", "server_port", "service", "name", "label",
          "probability", "decided_by", "decision_window"]


def verdicts_for_capture(args: argparse.Namespace
                         ) -> tuple[pd.DataFrame, pd.DataFrame, str, pd.DataFrame | None]:
    """Featurize ``args.capture`` and classify it; returns verdicts (each whole flow decided
    by the session model where it carried media through judged windows, see
    :mod:`classifier.model.combine`), the client summary of those verdicts, the featurize
    summary line, and the activity timeline (None without a session model or with
    ``--no-timeline``)."""
    from classifier.cli import engine, featurize_config
    from classifier.features.report import featurize_files
    from classifier.model.artifact import load_model
    from classifier.model.predict import classify_table, client_summary

    model = load_model(args.model)
    config = featurize_config(args)
    table, summary = featurize_files([args.capture], config, backend=args.backend,
                                     skip_bad=args.skip_bad, engine=engine(args))
    verdicts = classify_table(model, table, horizon=args.at)
    spans = None
    sessions = _sessions(args, config.flow)
    if sessions is not None:
        from classifier.model.combine import combine_verdicts
        from classifier.model.timeline import timeline

        run, session_config = sessions
        spans = timeline(run.windows)
        if args.at is None and args.windows is None and args.backend == "dpkt":
            verdicts = combine_verdicts(verdicts, run.activity, run.windows, session_config)
    return verdicts, client_summary(verdicts), summary, spans


def _sessions(args: argparse.Namespace, flow: FlowConfig
              ) -> tuple[CaptureSessions, SessionConfig] | None:
    """The capture seen by the model directory's session model, or None when the model
    has none (or ``--no-timeline``)."""
    from classifier.model.artifact import DEFAULT_MODEL_DIR
    from classifier.model.session_model import has_session_model, load_session_model
    from classifier.model.timeline import capture_sessions

    directory = Path(args.model) if args.model is not None else DEFAULT_MODEL_DIR
    if args.no_timeline or not has_session_model(directory):
        return None
    model = load_session_model(directory)
    return capture_sessions(model, args.capture, skip_bad=args.skip_bad,
                            flow=flow), model.config


def summary_lines(clients: pd.DataFrame) -> list[str]:
    """"client 10.0.0.5: 12 short-form flows, 63% of video bytes" per client."""
    return [
        f"client {r.client}: {r.short_form_flows} short-form flows, {r.long_form_flows} "
        f"long-form flows, short-form is {r.short_form_share_of_video_bytes:.0%} of video bytes"
        for r in clients.itertuples()
    ]


def _cmd_classify(args: argparse.Namespace) -> int:
    from classifier.model.timeline import timeline_lines

    verdicts, clients, summary, spans = verdicts_for_capture(args)
    if args.json:
        cols = [c for c in verdicts.columns if not c.startswith("at") or "__" not in c]
        doc = {"flows": json.loads(verdicts[cols].to_json(orient="records")),
               "clients": json.loads(clients.to_json(orient="records")),
               "timeline": ([] if spans is None
                            else json.loads(spans.to_json(orient="records")))}
        json.dump(doc, sys.stdout, indent=1)
        print()
    elif args.csv:
        verdicts.to_csv(sys.stdout, index=False)
    else:
        shown = verdicts.sort_values("probability", ascending=False)[_SHOWN]
        shown = shown.assign(name=shown["name"].fillna("-"))
        print(shown.to_string(index=False) if not shown.empty else "(no TCP/UDP flows)")
        print()
        print("\n".join(summary_lines(clients)))
        if spans is not None:
            print()
            print("activity over time (session model: each client's traffic per service or "
                  "server network, 60 s windows every 10 s; judged with hindsight: a "
                  "short-form run starts with the windows that led to it, where live mode "
                  "decides a few windows later):")
            print("\n".join(timeline_lines(spans)))
    print(summary, file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from classifier.cli import add_flow_options

    p = sub.add_parser("classify", help="label every flow of a capture short-form / "
                       "long-form / other, with probability and reason")
    p.add_argument("capture", type=Path)
    p.add_argument("--model", type=Path, default=None,
                   help="model directory (default: the model shipped with shortflow)")
    p.add_argument("--at", type=float, default=None, metavar="S",
                   help="decide on the early snapshot at S seconds (must be one of "
                   "--snapshots) instead of the whole flow")
    p.add_argument("--no-timeline", action="store_true",
                   help="flow model alone: no session model, so no activity timeline and "
                   "every flow decided on its own")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="flows and clients as JSON")
    out.add_argument("--csv", action="store_true", help="all columns as CSV")
    add_flow_options(p)
    p.set_defaults(handler=_cmd_classify)
