"""The API skeleton served by `cardmint serve`: real app, real cluster, in-process ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cardmint.api.app import create_app
from cardmint.catalog.load import load_catalog
from cardmint.config import secret
from cardmint.db import migrate
from cardmint.db.connect import connection
from support import TestCluster, poll, serving, start_cluster


@pytest.fixture
async def client(pg: TestCluster) -> AsyncIterator[httpx.AsyncClient]:
    settings = pg.settings()
    async with connection(secret(settings.migration_url), settings) as conn:
        await load_catalog(conn, sample=True)
    app = create_app(settings)
    async with serving(app) as c:
        yield c


async def test_health_and_catalog_routes(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    sets = (await client.get("/v1/sets")).json()
    assert {s["id"] for s in sets["data"]} >= {"base1", "xy1", "sv10"}
    card = (await client.get("/v1/cards/base1-4")).json()["data"]
    assert card["name"] == "Charizard"


async def test_errors_are_problem_details(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/cards/nope-1")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    body = missing.json()
    assert body["status"] == 404 and body["title"] and "nope-1" in body["detail"]


@pytest.mark.slow
async def test_a_lost_primary_is_a_503_with_retry_after(work_root, template_dir) -> None:
    tc = await start_cluster(work_root, template_dir, "api-fault", replicas=0)
    try:
        app = create_app(tc.settings())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                await poll(lambda: app.state.db.is_open)
                assert (await c.get("/health/primary")).status_code == 200
                await tc.cluster.down()  # the primary goes away under a running app
                response = await c.get("/v1/sets")
                alive = await c.get("/health")
    finally:
        await tc.cluster.down(purge=True)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["status"] == 503 and "unavailable" in body["detail"]
    assert alive.status_code == 200  # the process itself is fine


async def test_health_endpoints_answer_like_patroni(client: httpx.AsyncClient) -> None:
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["revision"] == ready.json()["head"] == migrate.head()
    assert (await client.get("/health/primary")).status_code == 200
    replica = await client.get("/health/replica")
    assert replica.status_code == 200 and replica.json()["replicas"][0]["healthy"] is True
    bad = await client.get("/health/replica", params={"lag": "-1"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "query.lag"


async def test_metrics_in_prometheus_format(client: httpx.AsyncClient) -> None:
    await client.get("/v1/cards/base1-4")
    await client.get("/v1/cards/nope-1")
    text = (await client.get("/metrics")).text
    assert ('cardmint_http_request_duration_seconds_count{method="GET",'
            'route="/v1/cards/{card_id}",status="200"} 1.0') in text
    assert 'route="/v1/cards/{card_id}",status="404"' in text
    for name in ("cardmint_db_query_duration_seconds_bucket",
                 "cardmint_db_pool_connections_in_use", "cardmint_db_pool_connections_max",
                 "cardmint_db_replica_lag_seconds", "cardmint_db_replica_healthy",
                 "# TYPE cardmint_intake_jobs gauge", 'cardmint_alerts_firing{severity="P0"}'):
        assert name in text, name  # the rest, and promtool's verdict: tests/test_prometheus.py


async def test_the_app_starts_without_a_database_and_says_503(pg: TestCluster) -> None:
    settings = pg.settings(database_url="postgresql://cardmint_app:x@127.0.0.1:1/cardmint",
                           replica_urls=[])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.get("/health")).status_code == 200
            ready = await c.get("/health/ready")
            assert ready.status_code == 503 and ready.headers["retry-after"]
            data = await c.get("/v1/sets")
            assert data.status_code == 503
            assert data.headers["content-type"] == "application/problem+json"
