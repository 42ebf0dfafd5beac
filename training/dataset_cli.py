"""`shortflow dataset ...` and `shortflow record`: argument parsing for the dataset tools.

The lead's ``training/cli.py`` calls :func:`register` and :func:`register_record` with the
top-level sub-parser collection; every handler returns an exit code and lets
:class:`classifier.errors.ShortflowError` through to ``main()``, which prints one line.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from classifier.cli.options import show_progress
from training.manifest import SESSION_LABELS

__all__ = ["register", "register_record"]

SubParsers = Any  # argparse._SubParsersAction[argparse.ArgumentParser]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _cmd_verify(args: argparse.Namespace) -> int:
    from training.manifest import load_manifest, verify_manifest

    bad = 0
    for manifest in args.manifests:
        problems = verify_manifest(manifest)
        for problem in problems:
            print(problem)
        bad += len(problems)
        n = len(load_manifest(manifest))
        state = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"{manifest}: {n} capture(s), {state}", file=sys.stderr)
    return 1 if bad else 0


def _cmd_add(args: argparse.Namespace) -> int:
    from training.manifest import add_row

    row = add_row(
        args.manifest,
        args.capture,
        args.label,
        args.app,
        recorded=args.recorded,
        device=args.device,
        date=args.date,
        license=args.license,
        notes=args.notes,
        url=args.url,
    )
    print(
        f"added {row.path.name} ({row.label}, {row.app}, sha256 {row.sha256[:16]}...) "
        f"to {args.manifest}"
    )
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from training.fetch import fetch_manifest
    from training.manifest import capture_cache_dir

    cache = args.cache or capture_cache_dir()
    failed = 0
    for manifest in args.manifests:
        done = fetch_manifest(manifest, cache, timeout=args.timeout)
        failed += len(done.failed)
        print(
            f"{manifest}: {len(done.downloaded)} fetched "
            f"({done.bytes_downloaded / 1e6:.1f} MB), {len(done.present)} present, "
            f"{len(done.no_url)} without url, {len(done.failed)} failed; cache {cache}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _cmd_import_trace(args: argparse.Namespace) -> int:
    from training.traces import import_traces

    rows = import_traces(
        args.trace,
        args.out,
        args.manifest,
        label=args.label,
        app=args.app,
        proto=args.proto,
        snaplen=args.snaplen,
        progress=show_progress(args.quiet),
        skip_bad=args.skip_bad,
    )
    counts = Counter(r.label for r in rows)
    manifest = rows[0].manifest if rows else args.manifest
    print(
        f"imported {len(rows)} session(s) into {args.out} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}); manifest {manifest}"
    )
    return 0


def _cmd_ensure_traces(args: argparse.Namespace) -> int:
    from training.traces import default_cache_dir, ensure_imported

    paths = ensure_imported(
        args.cache, source=args.source, snaplen=args.snaplen, progress=show_progress(args.quiet)
    )
    cache = args.cache or default_cache_dir()
    print(f"{len(paths)} imported trace capture(s); manifest {Path(cache) / 'traces.csv'}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from training.manifest import load_manifest

    for manifest in args.manifests:
        rows = load_manifest(manifest)
        by_label = Counter(r.label for r in rows)
        by_app = Counter((r.label, r.app or "-") for r in rows)
        print(f"{manifest}: {len(rows)} capture(s)")
        for label in SESSION_LABELS:
            if by_label[label]:
                apps = ", ".join(
                    f"{a} {n}" for (lab, a), n in sorted(by_app.items()) if lab == label
                )
                print(f"  {label:<12} {by_label[label]:>4}  ({apps})")
    return 0


def register(sub: SubParsers) -> None:
    """Add ``dataset`` with sub-commands verify, add, fetch, import-trace, ensure-traces,
    summary."""
    p = sub.add_parser(
        "dataset", help="dataset manifests: verify, add and fetch captures, import traces"
    )
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    v = dsub.add_parser("verify", help="check that every capture exists and its sha256 matches")
    v.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    v.set_defaults(handler=_cmd_verify)

    a = dsub.add_parser("add", help="hash a capture and append its row to a manifest")
    a.add_argument("manifest", type=Path, metavar="MANIFEST")
    a.add_argument("capture", type=Path, metavar="CAPTURE")
    a.add_argument("--label", required=True, choices=SESSION_LABELS)
    a.add_argument("--app", required=True, help="app or site, e.g. youtube, instagram")
    a.add_argument("--recorded", default="", help="how it was recorded (tool, place)")
    a.add_argument("--device", default="", help="device and OS, e.g. 'Pixel 7, Android 14'")
    a.add_argument("--date", default="", help="ISO date of the recording (default: today)")
    a.add_argument("--license", default="", help="license or terms of use")
    a.add_argument("--notes", default="")
    a.add_argument("--url", default="", help="where the capture can be downloaded")
    a.set_defaults(handler=_cmd_add)

    f = dsub.add_parser(
        "fetch", help="download the captures a manifest lists by url into the cache"
    )
    f.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    f.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="capture cache (default $SHORTFLOW_CACHE/captures or "
        "~/.cache/shortflow/captures, where training looks)",
    )
    f.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="seconds without progress before a download fails (default 60)",
    )
    f.set_defaults(handler=_cmd_fetch)

    t = dsub.add_parser(
        "import-trace",
        help="turn a packet-metadata trace (netpkt text, JSON, CSV) into pcap files",
    )
    t.add_argument("trace", type=Path, metavar="TRACE", help="trace file or folder of traces")
    t.add_argument("--out", type=Path, required=True, metavar="DIR")
    t.add_argument(
        "--manifest", type=Path, default=None, help="manifest to update (default DIR/traces.csv)"
    )
    t.add_argument(
        "--label",
        choices=SESSION_LABELS,
        default=None,
        help="session label (required for unknown trace sources)",
    )
    t.add_argument("--app", default=None, help="app (required for unknown trace sources)")
    t.add_argument(
        "--proto",
        choices=["tcp", "udp"],
        default=None,
        help="transport of CSV sessions (default from the known source)",
    )
    t.add_argument(
        "--snaplen",
        type=int,
        default=None,
        metavar="BYTES",
        help="keep only this many bytes per frame (wire length stays)",
    )
    t.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out malformed records (lines, JSON records) and keep the rest, with a "
        "warning per file; a compressed trace that breaks off keeps what came before",
    )
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(handler=_cmd_import_trace)

    e = dsub.add_parser(
        "ensure-traces", help="import all public traces into the cache once (traces.csv)"
    )
    e.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder (default $SHORTFLOW_CACHE/traces or ~/.cache/shortflow/traces)",
    )
    e.add_argument(
        "--source",
        type=Path,
        default=None,
        help="public captures folder (default $SHORTFLOW_TEST_DATA, $SHORTFLOW_PCAPS "
        "or ../shared/pcaps beside the repository)",
    )
    e.add_argument(
        "--snaplen",
        type=int,
        default=None,
        metavar="BYTES",
        help="keep only this many bytes per frame (wire length stays)",
    )
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(handler=_cmd_ensure_traces)

    s = dsub.add_parser("summary", help="count captures per label and app")
    s.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    s.set_defaults(handler=_cmd_summary)


def _cmd_record(args: argparse.Namespace) -> int:
    from training.record import record

    row = record(
        args.iface,
        args.label,
        args.app,
        args.duration,
        args.manifest,
        args.out,
        client=args.client,
        device=args.device,
        license=args.license,
        notes=args.notes,
        netns=args.netns,
    )
    print(
        f"recorded {row.path} ({row.label}, {row.app}, sha256 {row.sha256[:16]}...); "
        f"added to {args.manifest}"
    )
    return 0


def register_record(sub: SubParsers) -> None:
    """Add ``record``: capture with tcpdump for a while and append the row to a manifest."""
    p = sub.add_parser("record", help="record a labelled capture with tcpdump")
    p.add_argument("--iface", required=True, help="interface to capture on")
    p.add_argument(
        "--client", default=None, metavar="IP", help="only this device's traffic (BPF 'host IP')"
    )
    p.add_argument("--label", required=True, choices=SESSION_LABELS)
    p.add_argument("--app", required=True)
    p.add_argument("--duration", type=_positive, required=True, metavar="S")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--device", default="")
    p.add_argument("--license", default="")
    p.add_argument("--notes", default="")
    p.add_argument("--netns", default=None, help="run tcpdump inside this network namespace")
    p.set_defaults(handler=_cmd_record)
