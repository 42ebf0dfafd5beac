"""The FastAPI application: :func:`create_app` builds one, with its model, metrics and state.

Run it with ``shortflow serve`` or ``uvicorn --factory classifier.api.app:create_app``.
The model is loaded once, in the lifespan; if that fails the app still starts, ``/readyz``
answers 503 with the reason and classification endpoints answer 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from classifier import __version__
from classifier.api.metrics import ApiMetrics, MetricsMiddleware
from classifier.api.problems import CatchAllMiddleware, Problem, install_problem_handlers
from classifier.api.routers import captures, flows, health, model, policy, recordings
from classifier.api.routers import live as live_routes
from classifier.api.settings import Settings
from classifier.errors import ModelError
from classifier.live.state import LiveState
from classifier.model.loading import load_flow_model, load_session
from classifier.model.session_model import SessionModel

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Find short-form video (YouTube Shorts, Instagram Reels, TikTok) in encrypted traffic.

* `POST /v1/captures:classify` - a pcap/pcapng upload, a verdict per flow;
* `POST /v1/flows:classify` - feature rows, a verdict per row;
* `GET /v1/model` - the loaded model;
* `/v1/live/*`, `/v1/policy` - the live router (bearer token: `SHORTFLOW_API_TOKEN`).

Errors are `application/problem+json` (type, title, status, detail).
"""


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body exceeds the limit of {limit} bytes (SHORTFLOW_MAX_UPLOAD_BYTES)"
        )


class _BodyLimit:
    """Pure ASGI middleware: 413 for a request body above ``limit`` bytes.

    The check runs when the route first reads the body (so the error is a problem response
    of that route): a declared Content-Length above the limit is refused before any body
    byte is read; a body without one (chunked) is counted while it streams.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None  # the server refuses such requests before we see them
                break
        seen = 0
        limit = self.limit

        async def _receive() -> Message:
            nonlocal seen
            if declared is not None and declared > limit:
                raise _BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, _receive, send)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the Problem schema that error responses refer to."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    app.openapi_schema = doc
    return doc


def _session_model(directory: Path) -> SessionModel | None:
    """The session model beside the flow model, or None (none there, or it cannot be
    loaded: captures are then classified without a timeline, and the log says why)."""
    try:
        return load_session(directory)
    except ModelError as exc:
        log.error("session model not loaded, no timelines: %s", exc)
        return None


_DOCS_ASSETS = "/docs-assets"


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts, styles and icon served by
    the app itself (from the fastapi-offline package), not from a CDN: they work offline."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters={"validatorUrl": None},
        )  # no online validator badge

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{_DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def create_app(settings: Settings | None = None, live: LiveState | None = None) -> FastAPI:
    """A new app. ``settings`` default to the ``SHORTFLOW_*`` environment; ``live`` attaches
    a running live router's state (else live endpoints answer 409).

    Raises pydantic's ValidationError when the environment holds a bad setting.
    """
    settings = settings if settings is not None else Settings()
    metrics = ApiMetrics(live)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.cpu_limiter = anyio.CapacityLimiter(settings.cpu_workers)
        try:
            loaded = await anyio.to_thread.run_sync(load_flow_model, settings.model_dir)
        except ModelError as exc:
            app.state.model_error = str(exc)
            log.error("no model loaded, /readyz answers 503: %s", exc)
        else:
            app.state.model = loaded
            metrics.model_loaded.set(1)
            log.info("model %s loaded from %s", loaded.info.name, loaded.path)
            app.state.session_model = await anyio.to_thread.run_sync(_session_model, loaded.path)
        try:
            yield
        finally:
            app.state.model = None
            app.state.session_model = None
            metrics.model_loaded.set(0)

    app = FastAPI(
        title="shortflow",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _add_docs(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.live = live
    app.state.model = None
    app.state.session_model = None
    app.state.model_error = None
    install_problem_handlers(app)
    app.include_router(recordings.router)
    for module in (captures, flows, model, live_routes, policy, health):
        app.include_router(module.router)
    from classifier.web import install as install_web

    install_web(app)
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics, router=app.router)

    def _custom_openapi() -> dict[str, Any]:
        return _openapi(app)

    app.openapi = _custom_openapi  # type: ignore[method-assign]
    return app
