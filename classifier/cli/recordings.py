"""`shortflow recordings list|start|stop|relabel|delete|download`: record a client's own
traffic, labelled, on a running `shortflow live --api` (see docs/recording.md).

Connection options as for `shortflow blocks` (:mod:`classifier.cli.control`): ``--api`` or
``SHORTFLOW_API_URL``, ``--token-file`` or ``SHORTFLOW_API_TOKEN``. Every failure is one
line.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from classifier.cli.control import _client, _connection
from classifier.errors import ShortflowError
from classifier.live.recording import RECORDING_LABELS

__all__ = ["register"]

_BASE = "/v1/live/recordings"


def _path(rec_id: str, suffix: str = "") -> str:
    return f"{_BASE}/{urllib.parse.quote(rec_id, safe='')}{suffix}"


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes, got {text!r}") from None
    if not 0 < value <= 1440:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1440, got {text}")
    return value


def _lines(recs: list[dict[str, Any]]) -> list[str]:
    if not recs:
        return ["(no recordings)"]
    lines = [
        f"{'id':<28} {'client':<16} {'alias':<14} {'label':<10} {'start':<16} "
        f"{'secs':>6} {'MB':>7} {'dropped':>7}  state"
    ]
    for r in recs:
        start = datetime.fromtimestamp(float(r["start"])).strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"{r['id']:<28} {r['client']:<16} {(r.get('alias') or '-')[:14]:<14} "
            f"{r['label']:<10} {start:<16} {float(r['duration_s']):>6.0f} "
            f"{int(r['bytes']) / 1e6:>7.1f} {int(r['dropped']):>7}  {r['state']}"
            + (f" ({r['reason']})" if r.get("reason") and r["state"] != "running" else "")
        )
    return lines


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=1)
    print()


def _cmd_list(args: argparse.Namespace) -> int:
    doc = _client(args).call("GET", _BASE)
    if args.json:
        _print_json(doc)
    else:
        print("\n".join(_lines(doc["recordings"])))
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"client": args.client, "minutes": args.minutes, "label": args.label}
    if args.app is not None:
        body["app"] = args.app
    if args.alias is not None:
        body["alias"] = args.alias
    rec = _client(args).call("POST", _BASE, body)
    print(
        f"recording {rec['client']} as {rec['label']} ({rec['app'] or 'no app'}) for "
        f"{args.minutes:g} min: id {rec['id']}, file {rec['path']}"
    )
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    client = _client(args)
    for rec_id in args.ids:
        rec = client.call("POST", _path(rec_id, ":stop"))
        print(f"{rec['id']}: {rec['state']}, {rec['packets']} packets, {rec['dropped']} dropped")
    return 0


def _read_intervals(path: Path) -> list[Any]:
    """Intervals from a timeline JSON file: a list, or ``{"intervals": [...]}``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ShortflowError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ShortflowError(f"{path}: not JSON ({exc})") from None
    intervals = doc.get("intervals") if isinstance(doc, dict) else doc
    if not isinstance(intervals, list):
        raise ShortflowError(f"{path}: expected a list of intervals or {{'intervals': [...]}}")
    keys = ("start", "end", "start_s", "end_s", "label")
    return [{k: iv[k] for k in keys if k in iv} if isinstance(iv, dict) else iv for iv in intervals]


def _cmd_relabel(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"label": args.label}
    if args.timeline is not None:
        body["intervals"] = _read_intervals(args.timeline)
    rec = _client(args).call("PATCH", _path(args.id), body)
    print(f"{rec['id']}: now {rec['label']} ({rec['session_label']}, {rec['app'] or 'no app'})")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    client = _client(args)
    for rec_id in args.ids:
        client.call("DELETE", _path(rec_id))
        print(f"deleted {rec_id}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    dest = args.output or Path(f"{args.id}.pcap")
    size = _client(args).download(_path(args.id, "/capture"), dest)
    print(f"wrote {dest} ({size} bytes)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``recordings``."""
    rec = sub.add_parser(
        "recordings",
        help="record a client's own traffic, labelled, on a running `shortflow live --api`",
    )
    rsub = rec.add_subparsers(dest="recordings_command", required=True, metavar="ACTION")
    p = rsub.add_parser("list", help="recordings, running and ended")
    p.add_argument("--json", action="store_true", help="the API's JSON as it is")
    _connection(p)
    p.set_defaults(handler=_cmd_list)

    p = rsub.add_parser("start", help="record one client's packets for a while, labelled")
    p.add_argument("client", help="the client's IP address")
    p.add_argument("--minutes", type=_minutes, required=True, help="how long (at most 1440)")
    p.add_argument(
        "--label",
        required=True,
        choices=RECORDING_LABELS,
        help="what the client watches: shorts, reels, tiktok, long-form, other, ...",
    )
    p.add_argument("--app", default=None, help="the app (default: from the label)")
    p.add_argument("--alias", default=None, help="the device's name, e.g. anna-phone")
    _connection(p)
    p.set_defaults(handler=_cmd_start)

    p = rsub.add_parser("stop", help="end recordings now (their manifest rows are written)")
    p.add_argument("ids", nargs="+", metavar="ID")
    _connection(p)
    p.set_defaults(handler=_cmd_stop)

    p = rsub.add_parser("relabel", help="give a recording another label (or timed labels)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--label", required=True, choices=RECORDING_LABELS)
    p.add_argument(
        "--timeline",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON file of labelled intervals ({'intervals': [{'start_s', 'end_s', "
        "'label'}, ...]}); without it the whole recording takes --label",
    )
    _connection(p)
    p.set_defaults(handler=_cmd_relabel)

    p = rsub.add_parser("delete", help="delete recordings and their files")
    p.add_argument("ids", nargs="+", metavar="ID")
    _connection(p)
    p.set_defaults(handler=_cmd_delete)

    p = rsub.add_parser("download", help="save a recording's pcap")
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="file to write (default ID.pcap)"
    )
    _connection(p)
    p.set_defaults(handler=_cmd_download)
