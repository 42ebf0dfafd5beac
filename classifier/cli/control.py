"""`shortflow blocks list|add|remove` and `shortflow policy show|reload`: manage a running
`shortflow live --api` over its HTTP API, so nobody needs curl.

The API address comes from ``--api`` or ``SHORTFLOW_API_URL`` (default
``http://127.0.0.1:8080``), the bearer token from ``--token-file`` or
``SHORTFLOW_API_TOKEN`` (the live process's own setting). Every failure is one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from classifier.errors import ShortflowError

__all__ = ["register", "ApiClient"]

DEFAULT_API = "http://127.0.0.1:8080"
_TIMEOUT = 15.0


class ApiClient:
    """JSON over HTTP to a running live instance; raises :class:`ShortflowError` with
    the API's own one-line reason."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ShortflowError(f"{method} {path}: {exc.code} {_detail(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ShortflowError(
                f"cannot reach shortflow live at {self.base} ({reason}); is it running with --api?"
            ) from None
        return json.loads(raw) if raw else None

    def download(self, path: str, dest: Path) -> int:
        """GET ``path`` into the file ``dest`` (written whole or not at all); its size."""
        request = urllib.request.Request(self.base + path, method="GET")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                with open(tmp, "wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
            tmp.replace(dest)
        except urllib.error.HTTPError as exc:
            raise ShortflowError(f"GET {path}: {exc.code} {_detail(exc)}") from None
        except urllib.error.URLError as exc:
            raise ShortflowError(
                f"cannot reach shortflow live at {self.base} ({exc.reason}); "
                "is it running with --api?"
            ) from None
        except OSError as exc:
            raise ShortflowError(f"{dest}: cannot write ({exc.strerror or exc})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size


def _detail(exc: urllib.error.HTTPError) -> str:
    """The problem document's detail (or title), else the HTTP reason."""
    try:
        doc = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        doc = {}
    detail = doc.get("detail") if isinstance(doc, dict) else None
    if isinstance(detail, list):  # a validation error: its first message
        detail = "; ".join(str(d.get("msg", d)) for d in detail[:3] if isinstance(d, dict))
    return str(detail or (doc.get("title") if isinstance(doc, dict) else None) or exc.reason)


def _client(args: argparse.Namespace) -> ApiClient:
    token = os.environ.get("SHORTFLOW_API_TOKEN") or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip() or None
        except OSError as exc:
            raise ShortflowError(
                f"{args.token_file}: cannot read the token ({exc.strerror or exc})"
            ) from None
    base = args.api or os.environ.get("SHORTFLOW_API_URL") or DEFAULT_API
    return ApiClient(base, token)


def _block_lines(blocks: list[dict[str, Any]], now: float) -> list[str]:
    if not blocks:
        return ["(no blocks in force)"]
    lines = [
        f"{'id':<14} {'client':<16} {'server':<22} {'label':<11} {'p':>5} "
        f"{'left':>6}  mode     reason"
    ]
    for b in blocks:
        server = b["server"] + (f":{b['port']}/{b['proto']}" if b.get("port") else "")
        left = max(0.0, float(b["expires"]) - now)
        mode = "dry-run" if b["dry_run"] else "nft"
        lines.append(
            f"{b['id']:<14} {b['client']:<16} {server:<22} {b['label']:<11} "
            f"{float(b['probability']):>5.2f} {left:>5.0f}s  {mode:<8} "
            f"{b.get('reason') or b.get('rule') or ''}"
        )
    return lines


def _cmd_blocks_list(args: argparse.Namespace) -> int:
    doc = _client(args).call("GET", "/v1/live/blocks")
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print("\n".join(_block_lines(doc["blocks"], time.time())))
    return 0


def _cmd_blocks_add(args: argparse.Namespace) -> int:
    if (args.port is None) != (args.proto is None):
        raise ShortflowError(
            "give --port and --proto together, or neither to block the whole client+server pair"
        )
    body: dict[str, Any] = {
        "client": args.client,
        "server": args.server,
        "duration_s": args.seconds,
        "reason": args.reason,
    }
    if args.port is not None:
        body.update(port=args.port, proto=args.proto)
    rec = _client(args).call("POST", "/v1/live/blocks", body)
    what = "would block (dry-run)" if rec["dry_run"] else "blocked"
    print(
        f"{what} {rec['client']} -> {rec['server']}"
        + (f":{rec['port']}/{rec['proto']}" if rec.get("port") else "")
        + f" for {args.seconds} s: id {rec['id']}"
    )
    return 0


def _cmd_blocks_remove(args: argparse.Namespace) -> int:
    client = _client(args)
    for block_id in args.ids:
        client.call("DELETE", f"/v1/live/blocks/{urllib.parse.quote(block_id, safe='')}")
        print(f"lifted {block_id}")
    return 0


def _cmd_policy_show(args: argparse.Namespace) -> int:
    json.dump(_client(args).call("GET", "/v1/policy"), sys.stdout, indent=1)
    print()
    return 0


def _cmd_policy_reload(args: argparse.Namespace) -> int:
    doc = _client(args).call("POST", "/v1/policy:reload")
    print(f"policy reloaded: mode {doc.get('mode')}, source {doc.get('source')}")
    return 0


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api",
        default=None,
        metavar="URL",
        help=f"the live instance's API (default $SHORTFLOW_API_URL or {DEFAULT_API})",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="file holding the API token (default $SHORTFLOW_API_TOKEN)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``blocks`` and ``policy``."""
    blocks = sub.add_parser(
        "blocks", help="list, add or lift blocks of a running `shortflow live --api`"
    )
    bsub = blocks.add_subparsers(dest="blocks_command", required=True, metavar="ACTION")
    p = bsub.add_parser("list", help="blocks in force (and dry-run would-be blocks)")
    p.add_argument("--json", action="store_true", help="the API's JSON as it is")
    _connection(p)
    p.set_defaults(handler=_cmd_blocks_list)
    p = bsub.add_parser("add", help="block a client+server pair (or one port) by hand")
    p.add_argument("client", help="client address")
    p.add_argument("server", help="server address")
    p.add_argument("--port", type=int, default=None, help="only this server port")
    p.add_argument(
        "--proto", choices=["tcp", "udp"], default=None, help="with --port: its protocol"
    )
    p.add_argument("--seconds", type=int, default=300, help="how long (default 300)")
    p.add_argument("--reason", default="manual block via shortflow blocks add")
    _connection(p)
    p.set_defaults(handler=_cmd_blocks_add)
    p = bsub.add_parser("remove", help="lift blocks by id (see `shortflow blocks list`)")
    p.add_argument("ids", nargs="+", metavar="ID")
    _connection(p)
    p.set_defaults(handler=_cmd_blocks_remove)

    policy = sub.add_parser(
        "policy", help="show or reload the policy of a running `shortflow live --api`"
    )
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    p = psub.add_parser("show", help="the policy in force, as JSON")
    _connection(p)
    p.set_defaults(handler=_cmd_policy_show)
    p = psub.add_parser("reload", help="re-read the policy file (as SIGHUP does)")
    _connection(p)
    p.set_defaults(handler=_cmd_policy_reload)
