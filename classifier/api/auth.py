"""Who may change state: bearer-token checks and the bind-address safety rule.

Endpoints that change state or show live client activity (``/v1/live/*``, ``/v1/policy``)
depend on :func:`require_token`. With ``SHORTFLOW_API_TOKEN`` set, a request must carry
``Authorization: Bearer <token>`` (compared in constant time), else 401. Without a token
those endpoints answer loopback peers only (403 for anyone else): combined with
:func:`check_bind_safety`, which refuses live mode on a non-loopback address without a
token, live client activity never leaves the machine unauthenticated.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from classifier.api.problems import ApiProblem
from classifier.errors import ShortflowError

__all__ = ["check_bind_safety", "is_loopback", "require_token", "TokenRequired"]

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="SHORTFLOW_API_TOKEN", scheme_name="bearerToken")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="shortflow"'}


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address.

    Any other host name counts as not loopback (names are not resolved).
    """
    if not host:
        return False
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_bind_safety(host: str, token: str | None, live: bool) -> None:
    """Refuse to expose live mode on a non-loopback address without an API token.

    Raises :class:`~classifier.errors.ShortflowError` (one line) when ``live`` is true,
    ``host`` is not a loopback address and ``token`` is empty. Logs a warning for a
    non-loopback bind in the other cases.
    """
    if is_loopback(host):
        return
    if not (token and token.strip()):
        if live:
            raise ShortflowError(
                f"refusing to serve live mode on {host} without an API token; set "
                "SHORTFLOW_API_TOKEN or bind to 127.0.0.1"
            )
        log.warning(
            "serving on non-loopback address %s: anyone who can reach it may classify captures",
            host,
        )
    elif len(token.strip()) < 16:
        log.warning(
            "SHORTFLOW_API_TOKEN is shorter than 16 characters; use a long random "
            "token on a non-loopback address"
        )


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """FastAPI dependency: let the request through only with the right bearer token.

    Raises ApiProblem 401 (missing or wrong token) or 403 (no token configured and the
    peer is not on loopback).
    """
    expected: str | None = request.app.state.settings.token()
    if expected is None:
        peer = request.client.host if request.client is not None else None
        if is_loopback(peer):
            return
        raise ApiProblem(
            403,
            "no API token is configured, so this endpoint answers loopback "
            "clients only; set SHORTFLOW_API_TOKEN",
        )
    if credentials is None:
        raise ApiProblem(
            401,
            "this endpoint needs Authorization: Bearer <SHORTFLOW_API_TOKEN>",
            headers=_CHALLENGE,
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise ApiProblem(
            401,
            "the bearer token is not valid",
            headers={"WWW-Authenticate": 'Bearer realm="shortflow", error="invalid_token"'},
        )


TokenRequired = Depends(require_token)
"""Use as ``dependencies=[TokenRequired]`` on routers and routes."""
