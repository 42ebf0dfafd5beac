"""`shortflow live`: run the live router mode until SIGTERM/SIGINT; SIGHUP reloads policy."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["register", "parse_hostport"]

log = logging.getLogger(__name__)


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``ADDR:PORT``, ``[v6]:PORT``, or ``ADDR`` when a default port is given."""
    host, sep, port = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        sep = ":" if port else ""
    elif not sep or ":" in host:  # no port, or a bare IPv6 address
        host, port = text, ""
    if not port:
        if default_port is None:
            raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {text!r}")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}")
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or positive, got {text}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected megabytes, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of MB, got {text}")
    return value


def _default_data_dir(audit_log: Path) -> Path:
    """The data directory beside the audit log: ``<audit log's folder>/shortflow-data``."""
    return audit_log.parent / "shortflow-data"


def _serve_api(router: object, hostport: tuple[str, int], model: Path | None) -> None:
    import uvicorn

    from classifier.api.app import create_app
    from classifier.api.auth import check_bind_safety
    from classifier.api.settings import Settings

    overrides: dict[str, Any] = {"host": hostport[0], "port": hostport[1]}
    if model is not None:
        overrides["model_dir"] = model
    settings = Settings(**overrides)
    check_bind_safety(settings.host, settings.token(), live=True)
    app = create_app(settings, live=router.state)  # type: ignore[attr-defined]
    server = uvicorn.Server(
        uvicorn.Config(app, host=hostport[0], port=hostport[1], log_level="warning")
    )
    threading.Thread(target=server.run, name="shortflow-api", daemon=True).start()


class _DecoderAlias(argparse.Action):
    """``--decoder batch|python``: the older name of ``--engine fast|reference``."""

    _ENGINES = {"batch": "fast", "python": "reference"}

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self._ENGINES[str(values)])
        namespace.decoder_alias = True


def _is_the_command() -> bool:
    """Whether this process is the ``shortflow`` command (the installed script or
    ``python -m classifier.cli``), not a program that called ``main`` itself: only the
    command may run itself again."""
    program = Path(sys.argv[0])
    return program.name == "shortflow" or program.parts[-3:] == (
        "classifier",
        "cli",
        "__main__.py",
    )


def _cmd_live(args: argparse.Namespace) -> int:
    from classifier.live.memory import limit_arenas, python_malloc_argv

    again = python_malloc_argv() if _is_the_command() else None
    if again is not None:  # Python's objects on glibc's malloc, which trims page by page
        os.execve(again[0], again, {**os.environ, "PYTHONMALLOC": "malloc"})
    # before the API, DNS and capture threads start: they then share two malloc arenas
    limit_arenas()
    from classifier.live.router import LiveConfig, LiveRouter

    if getattr(args, "decoder_alias", False):
        log.warning("--decoder is the older name of --engine (batch: fast, python: reference)")

    if args.api is not None:  # refuse an unsafe bind before touching the firewall
        from classifier.api.auth import check_bind_safety
        from classifier.api.settings import Settings

        check_bind_safety(args.api[0], Settings().token(), live=True)
    config = LiveConfig(
        ifaces=tuple(args.iface),
        capture=args.capture,
        nflog_group=args.nflog_group,
        engine=args.engine,
        model=args.model,
        policy=args.policy,
        enforce=args.enforce,
        audit_log=args.audit_log,
        data_dir=args.data_dir if args.data_dir is not None else _default_data_dir(args.audit_log),
        record_max_mb=args.record_max_mb,
        record_dir_max_mb=args.record_dir_max_mb,
        dns_listen=args.dns_listen,
        dns_upstream=args.dns_upstream,
        summary_every=args.summary_every,
        leases=args.leases,
    )
    router = LiveRouter(config)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("live: signal %d, stopping", signum)
        router.stop()

    def _reload(_signum: int, _frame: FrameType | None) -> None:
        error = router.policy.reload()
        if error is not None:
            print(
                f"shortflow: policy not reloaded, the running policy stays: {error}",
                file=sys.stderr,
            )
            return
        note = router.state.enforcement()["note"]
        if note is not None:
            print(f"shortflow: {note}", file=sys.stderr)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    try:
        if args.api is not None:
            _serve_api(router, args.api, args.model)
        if not args.quiet:
            print(
                f"shortflow: live on {', '.join(args.iface) or 'nflog'} "
                f"(capture {args.capture}, enforcement "
                f"{router.state.enforcement()['effective']}, audit log "
                f"{args.audit_log}, {router.decisions})",
                file=sys.stderr,
                flush=True,
            )
        router.run()
    finally:
        router.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "live",
        help="classify flows as they start on a router; block "
        "short-form with nftables (dry-run by default)",
    )
    p.add_argument(
        "--iface",
        action="append",
        default=[],
        help="client-facing interface to capture on (repeatable)",
    )
    p.add_argument(
        "--capture",
        choices=["afpacket", "nflog"],
        default="afpacket",
        help="afpacket reads the interfaces; nflog lets shortflow's nftables "
        "table copy packets (whole for a connection's first packets and DNS)",
    )
    p.add_argument("--nflog-group", type=int, default=7)
    p.add_argument(
        "--engine",
        choices=["fast", "reference"],
        default="fast",
        help="fast decodes many captured packets per compiled call (default); "
        "reference decodes one at a time in Python (slower)",
    )
    p.add_argument(  # the older name of --engine: batch is fast, python is reference
        "--decoder",
        dest="engine",
        choices=["batch", "python"],
        action=_DecoderAlias,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--policy", type=Path, default=None, help="policy TOML (SIGHUP reloads)")
    p.add_argument(
        "--enforce",
        choices=["off", "dry-run", "nft"],
        default="dry-run",
        help="dry-run (default) decides and logs but changes nothing",
    )
    p.add_argument("--audit-log", type=Path, default=Path("shortflow-audit.jsonl"))
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where recordings of clients' traffic go (DIR/recordings; default: "
        "shortflow-data beside the audit log)",
    )
    p.add_argument(
        "--record-max-mb",
        type=_megabytes,
        default=200.0,
        metavar="MB",
        help="size cap of one recording (default 200)",
    )
    p.add_argument(
        "--record-dir-max-mb",
        type=_megabytes,
        default=2000.0,
        metavar="MB",
        help="size cap of all recordings together (default 2000)",
    )
    p.add_argument(
        "--dns-listen",
        type=parse_hostport,
        default=None,
        metavar="ADDR:PORT",
        help="run the DNS forwarder/sinkhole here (clients use it as resolver)",
    )
    p.add_argument(
        "--dns-upstream", type=lambda t: parse_hostport(t, 53), default=None, metavar="ADDR[:PORT]"
    )
    p.add_argument(
        "--api",
        type=parse_hostport,
        default=None,
        metavar="HOST:PORT",
        help="also serve the HTTP API with the live state (token required off loopback)",
    )
    p.add_argument(
        "--leases",
        type=Path,
        default=None,
        metavar="PATH",
        help="dnsmasq leases file: the web pages name clients by its host names and MACs",
    )
    p.add_argument(
        "--summary-every",
        type=_seconds,
        default=300.0,
        metavar="S",
        help="log a summary line (packets, drops, flows, verdicts, blocks) "
        "every S seconds (default 300; 0: only at exit)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="log only warnings and errors (no start, verdict or summary "
        "lines); the global -v logs everything, debug included",
    )
    # live mode tells what it does: its verdict and summary lines are INFO (see cli.main)
    p.set_defaults(handler=_cmd_live, own_log_level=logging.INFO)
