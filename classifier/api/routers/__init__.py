"""Routers, one per resource, and the dependencies they share (``Annotated`` aliases)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import Depends, Request

from classifier.api.metrics import ApiMetrics
from classifier.api.problems import ApiProblem
from classifier.api.settings import Settings
from classifier.live.state import LiveState
from classifier.model.artifact import LoadedModel

__all__ = [
    "SettingsDep",
    "MetricsDep",
    "ModelDep",
    "LiveDep",
    "get_settings",
    "get_metrics",
    "get_model",
    "get_live",
    "run_cpu",
    "LIVE_NOT_RUNNING",
]

T = TypeVar("T")

LIVE_NOT_RUNNING = "live mode is not running"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def get_model(request: Request) -> LoadedModel:
    """The model loaded at startup. Raises ApiProblem 503 when there is none."""
    model: LoadedModel | None = getattr(request.app.state, "model", None)
    if model is None:
        why = getattr(request.app.state, "model_error", None) or "the app is starting"
        raise ApiProblem(
            503, f"no model loaded: {why}", title="model not loaded", kind="model-not-loaded"
        )
    return model


def get_live(request: Request) -> LiveState:
    """The attached live state. Raises ApiProblem 409 when the API runs without live mode."""
    live: LiveState | None = request.app.state.live
    if live is None:
        raise ApiProblem(
            409,
            "this server was started without a live capture; start "
            "`shortflow live` to use this endpoint",
            title=LIVE_NOT_RUNNING,
            kind="live-not-running",
        )
    return live


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]
LiveDep = Annotated[LiveState, Depends(get_live)]


async def run_cpu(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound ``fn(*args)`` in the threadpool, at most ``cpu_workers`` at once."""
    limiter = request.app.state.cpu_limiter
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)
