"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error response of the API has the same body: ``type``, ``title``, ``status``,
``detail`` (one line, never a stack trace) and, for validation errors, ``errors``. Errors
that shortflow raises on purpose (:class:`~classifier.errors.ShortflowError`) keep their
message; anything unexpected becomes a bare 500 and is logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from classifier.errors import (
    CaptureError,
    DatasetError,
    EnforcementError,
    ModelError,
    PolicyError,
    ShortflowError,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "ApiProblem",
    "problem_response",
    "problem_responses",
    "install_problem_handlers",
    "CatchAllMiddleware",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:shortflow:problem:"

_TITLES: dict[int, str] = {
    400: "bad request",
    401: "authentication required",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    406: "not acceptable",
    409: "conflict",
    413: "request body too large",
    415: "unsupported media type",
    422: "unprocessable content",
    500: "internal server error",
    503: "service unavailable",
}


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(description="URI that names the kind of problem")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="one line: what went wrong in this request")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors, one per bad field"
    )


class ApiProblem(Exception):
    """Raise from a route to answer with a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "error")
        self.kind = kind or self.title.replace(" ", "-")
        self.headers = headers


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    kind: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """A ``application/problem+json`` response."""
    title = title or _TITLES.get(status, "error")
    body: dict[str, Any] = {
        "type": _TYPE_BASE + (kind or title.replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": _one_line(detail),
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem bodies for these statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": _TITLES.get(status, "error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


_STATUS_OF: tuple[tuple[type[ShortflowError], int, str], ...] = (
    (CaptureError, 422, "not a readable capture"),
    (PolicyError, 422, "invalid policy"),
    (ModelError, 422, "model cannot use this input"),
    (DatasetError, 422, "invalid dataset"),
    (EnforcementError, 503, "enforcement failed"),
)


def _shortflow_status(exc: ShortflowError) -> tuple[int, str]:
    for cls, status, title in _STATUS_OF:
        if isinstance(exc, cls):
            return status, title
    return 400, "bad request"


def _validation_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        errors.append(
            {
                "loc": loc,
                "msg": _one_line(str(err.get("msg", "invalid")), 200),
                "type": str(err.get("type", "")),
            }
        )
    if not errors:
        return "invalid request", errors
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['loc']}: {first['msg']}{more}", errors[:50]


def install_problem_handlers(app: FastAPI) -> None:
    """Translate every error into a problem response (no stack traces to clients)."""

    async def _api_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return problem_response(
            exc.status, exc.detail, title=exc.title, kind=exc.kind, headers=exc.headers
        )

    async def _shortflow(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ShortflowError)
        status, title = _shortflow_status(exc)
        log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return problem_response(status, str(exc), title=title)

    async def _http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = (
            exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        )
        return problem_response(exc.status_code, detail, headers=exc.headers)

    async def _validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail, errors = _validation_errors(exc)
        return problem_response(422, detail, title="invalid request", errors=errors)

    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(ShortflowError, _shortflow)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)


class CatchAllMiddleware:
    """Pure ASGI middleware: an unexpected exception becomes a bare 500 problem (logged
    with its traceback); the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for a problem response; the server closes the connection
            response = problem_response(500, "an unexpected error occurred; see the server log")
            await response(scope, receive, send)
