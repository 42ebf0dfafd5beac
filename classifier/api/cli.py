"""``shortflow serve``: run the HTTP API with uvicorn (loopback by default)."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import Any

from classifier.errors import ShortflowError

__all__ = ["register", "build_settings", "listen"]

log = logging.getLogger(__name__)


def build_settings(args: argparse.Namespace) -> Any:
    """Settings from the environment (``SHORTFLOW_*``) overridden by the command line.

    Raises ShortflowError (one line) for a bad environment value or option.
    """
    from pydantic import ValidationError

    from classifier.api.settings import Settings

    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.model is not None:
        overrides["model_dir"] = args.model
    if args.max_upload_bytes is not None:
        overrides["max_upload_bytes"] = args.max_upload_bytes
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        raise ShortflowError(
            f"bad setting {where} (SHORTFLOW_{where.upper()}): {err.get('msg', 'invalid')}"
        ) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from classifier.api.app import create_app
    from classifier.api.auth import check_bind_safety
    from classifier.model.artifact import read_info

    settings = build_settings(args)
    check_bind_safety(settings.host, settings.token(), live=False)
    if settings.model_dir is not None:
        read_info(Path(settings.model_dir))  # fail fast on a wrong --model; loaded in lifespan
    app = create_app(settings)
    sock = listen(settings.host, settings.port)
    where = f"http://{_host_in_url(settings.host)}:{sock.getsockname()[1]}"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # listening, and the app started (the model loaded)
                print(f"shortflow: serving on {where} (docs at /docs)", flush=True)

    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log)
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening. Raises ShortflowError (one
    line: ``cannot listen on HOST:PORT: address already in use``) when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ShortflowError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ShortflowError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shortflow serve`` to the top-level parser."""
    p = sub.add_parser(
        "serve",
        help="run the HTTP API (FastAPI/uvicorn) on 127.0.0.1:8080",
        description="Serve the HTTP API. Settings come from SHORTFLOW_* "
        "environment variables; options here override them. Live and policy "
        "endpoints need SHORTFLOW_API_TOKEN as a bearer token.",
    )
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8080)")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory (default: the model shipped with shortflow)",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest upload accepted (default 256 MiB)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=_cmd_serve)
