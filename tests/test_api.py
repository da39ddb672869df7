"""The API skeleton served by `cardmint serve`: real app, real cluster, in-process ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cardmint.api.app import create_app
from cardmint.catalog.load import load_catalog
from cardmint.config import secret
from cardmint.db.connect import connection
from support import TestCluster, start_cluster


@pytest.fixture
async def client(pg: TestCluster) -> AsyncIterator[httpx.AsyncClient]:
    settings = pg.settings()
    async with connection(secret(settings.migration_url), settings) as conn:
        await load_catalog(conn, sample=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
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
                assert (await c.get("/health")).status_code == 200
                await tc.cluster.down()  # the primary goes away under a running app
                response = await c.get("/health")
    finally:
        await tc.cluster.down(purge=True)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["status"] == 503 and "unavailable" in body["detail"]
