"""`GET /metrics`: Prometheus text, read at scrape time.

Request latency is observed by a middleware; the data layer's pools and query latency
come from the live objects; the cluster, the operations tables and the host are read
when scraped (`ops.monitor.scrape`), so nothing goes stale. `metric_families` turns all
of it into families; `promtool check metrics` accepts the result (tests/test_prometheus.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardmint.api import metric_families
from cardmint.db import Database
from cardmint.db.latency import BOUNDS
from cardmint.ops.monitor.scrape import Scrape, Scraper


class ScrapeCollector(Collector):
    """The families of one scrape: the handler reads the figures (async), then renders."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.figures: Scrape | None = None

    def collect(self) -> Iterator[Metric]:
        db: Database | None = getattr(self.app.state, "db", None)
        if db is not None:
            yield from metric_families.data_layer(db)
        if self.figures is not None:
            yield from metric_families.scraped(self.figures)


class Observe:
    """Request latency by route template and status, as plain ASGI: Starlette's
    BaseHTTPMiddleware (`@app.middleware`) costs a task and a memory stream per request;
    without it a card lookup served 1.5x the requests per second (measured, wrk)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # unless the app answers

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")  # the template, not the raw path
            self.histogram.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - began)


def install(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Histogram("cardmint_http_request_duration_seconds",
                         "HTTP request latency by route template, method and status",
                         ["method", "route", "status"], buckets=BOUNDS, registry=registry)
    collector = ScrapeCollector(app)
    registry.register(collector)
    scraper: Scraper | None = None  # made with the settings the lifespan puts in state

    app.add_middleware(Observe, histogram=requests)

    @app.get("/metrics", response_class=Response, responses={
        200: {"description": "Prometheus text exposition format",
              "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: request latency by route, the data layer, every node as
        postgres_exporter names it, the queue, alerts, backups and drills."""
        nonlocal scraper
        state = request.app.state
        scraper = scraper or Scraper(state.settings)
        figures = await scraper.read(getattr(state, "db", None))
        collector.figures = figures  # rendered at once below: no await in between
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
