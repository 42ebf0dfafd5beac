"""``/healthz`` (process up), ``/readyz`` (model loaded) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from classifier.api.metrics import CONTENT_TYPE_LATEST
from classifier.api.problems import problem_responses
from classifier.api.routers import MetricsDep, get_model
from classifier.api.schemas import Health, Ready

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz", response_model=Ready, summary="A model is loaded", responses=problem_responses(503)
)
async def readyz(request: Request) -> Ready:
    """200 when the model is loaded, else 503 with the reason it is not."""
    model = get_model(request)
    return Ready(model=model.info.name, live=request.app.state.live is not None)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Requests by route and status, latency histogram, flows classified by label, and
    live packet/drop/block counters when live."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
