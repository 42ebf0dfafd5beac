"""Prometheus metrics of one app instance (its own registry, so apps in one process and
tests never share counters) and the ASGI middleware that feeds them.

Exposed names: ``shortflow_http_requests_total{method,route,status}``,
``shortflow_http_request_duration_seconds{method,route}`` (histogram),
``shortflow_flows_classified_total{label,source}``, ``shortflow_upload_bytes_total``,
``shortflow_model_loaded`` and, when live, ``shortflow_live_<counter>_total`` plus
``shortflow_live_active_flows`` and ``shortflow_live_active_blocks``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from classifier.live.state import LiveState

__all__ = ["ApiMetrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST"]

log = logging.getLogger(__name__)

_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_UNMATCHED = "<unmatched>"


class _LiveCollector(Collector):
    """Reads the live state's counters at scrape time."""

    def __init__(self, live: LiveState) -> None:
        self._live = live

    def collect(self) -> Iterable[Metric]:
        counters = self._live.counters_snapshot()
        for name, value in sorted(counters.items()):
            fam = CounterMetricFamily(f"shortflow_live_{name}", f"live mode: {name} since start")
            fam.add_metric([], float(value))
            yield fam
        flows = GaugeMetricFamily("shortflow_live_active_flows", "flows with a live verdict")
        flows.add_metric([], float(self._live.flow_count()))
        yield flows
        blocks = GaugeMetricFamily(
            "shortflow_live_active_blocks", "blocks (or dry-run blocks) in force"
        )
        blocks.add_metric([], float(self._live.block_count()))
        yield blocks


class ApiMetrics:
    """The metrics of one app; :meth:`render` gives the Prometheus text exposition."""

    def __init__(self, live: LiveState | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shortflow_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shortflow_http_request_duration_seconds",
            "time from request to the end of the response",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.flows = Counter(
            "shortflow_flows_classified",
            "verdicts given, by label",
            ["label", "source"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "shortflow_upload_bytes", "capture bytes received", registry=self.registry
        )
        self.model_loaded = Gauge(
            "shortflow_model_loaded", "1 when a model is loaded", registry=self.registry
        )
        if live is not None:
            self.registry.register(_LiveCollector(live))

    def count_labels(self, labels: Iterable[str], source: str) -> None:
        """Count one classified flow (or row) per label in ``labels``."""
        tally: dict[str, int] = {}
        for label in labels:
            tally[label] = tally.get(label, 0) + 1
        for label, n in tally.items():
            self.flows.labels(label=label, source=source).inc(n)

    def render(self) -> bytes:
        """The Prometheus text format of every metric of this app."""
        return generate_latest(self.registry)


def _route_of(scope: Scope, routes: Iterable[BaseRoute]) -> str:
    """The path template of the route that handled ``scope`` (bounded label values)."""
    handled = scope.get("route")
    path = getattr(handled, "path", None)
    if isinstance(path, str):
        return path
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str) and route.matches(scope)[0] != Match.NONE:
            return path
    return _UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, router: Router) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        status = 500
        started = time.perf_counter()

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = _route_of(scope, self.router.routes)
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route).observe(
                time.perf_counter() - started
            )
