"""Tokens, scopes, the failure limit, idempotent POSTs, body limits and CORS, through a
real app on the real cluster (a test-only route stands for the write routes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, Request
from pydantic import BaseModel

from cardmint import tokens
from cardmint.api.app import create_app
from cardmint.api.auth import FailureLimiter, Principal, require_scope
from cardmint.api.idempotency import idempotent
from cardmint.db import Database, Transaction
from support import TestCluster, serving


class Opened(BaseModel):
    id: int
    owner: str


def build_app(settings):
    app = create_app(settings)

    @app.post("/test/incidents", status_code=201)
    async def open_one(request: Request,
                       who: Principal = Depends(require_scope("write"))) -> Any:
        body = json.loads(await request.body() or b"{}")

        async def run(tx: Transaction) -> tuple[int, Opened]:
            new_id = await tx.fetchval(
                "INSERT INTO incidents (title, severity) VALUES ($1, 'P2') RETURNING id",
                f"auth-test {body.get('title', '')} by {who.owner}")
            return 201, Opened(id=new_id, owner=who.owner)

        return await idempotent(request, who, run)

    return app


@pytest.fixture
async def client(pg: TestCluster) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    app = build_app(pg.settings())
    async with serving(app) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c, app.state.db
        await app.state.db.execute("DELETE FROM incidents WHERE title LIKE 'auth-test%'")
        await app.state.db.execute("DELETE FROM idempotency_keys")
        await app.state.db.execute("DELETE FROM api_tokens WHERE owner LIKE 'auth-test%'")


async def token(db: Database, scope: str) -> str:
    value, _ = await tokens.create_token(db, owner=f"auth-test-{scope}", scope=scope)
    return value


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def count(db: Database) -> int:
    return await db.fetchval("SELECT count(*) FROM incidents WHERE title LIKE 'auth-test%'")


async def test_writes_need_a_token_with_the_scope(client) -> None:
    c, db = client
    missing = await c.post("/test/incidents", json={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await c.post("/test/incidents", json={}, headers=bearer("cm_not-a-token"))
    assert wrong.status_code == 401 and "cm_not-a-token" not in wrong.text
    reader = await c.post("/test/incidents", json={}, headers=bearer(await token(db, "read")))
    assert reader.status_code == 403
    writer = await token(db, "write")
    ok = await c.post("/test/incidents", json={"title": "a"}, headers=bearer(writer))
    assert ok.status_code == 201 and ok.json()["owner"] == "auth-test-write"
    admin = await c.post("/test/incidents", json={}, headers=bearer(await token(db, "admin")))
    assert admin.status_code == 201
    assert await count(db) == 2
    # stored hashed: the database holds no token text
    stored = await db.fetch("SELECT token_hash, prefix FROM api_tokens")
    assert all(writer.encode() not in bytes(r["token_hash"]) for r in stored)
    # revoked: refused at once
    record = await db.fetchval("SELECT id FROM api_tokens WHERE owner = 'auth-test-write'")
    await tokens.revoke_token(db, record)
    assert (await c.post("/test/incidents", json={}, headers=bearer(writer))).status_code == 401


async def test_failed_authentications_are_limited(client) -> None:
    c, db = client
    now = [0.0]
    c.app.state.auth_failures = FailureLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert (await c.post("/test/incidents", headers=bearer("cm_x"))).status_code == 401
    limited = await c.post("/test/incidents", headers=bearer(await token(db, "write")))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    now[0] += 61
    assert (await c.post("/test/incidents", json={},
                         headers=bearer(await token(db, "write")))).status_code == 201


async def test_idempotency_key_replays_and_never_writes_twice(client) -> None:
    c, db = client
    headers = {**bearer(await token(db, "write")), "Idempotency-Key": "k-1"}
    first = await c.post("/test/incidents", json={"title": "x"}, headers=headers)
    again = await c.post("/test/incidents", json={"title": "x"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    other = await c.post("/test/incidents", json={"title": "y"}, headers=headers)
    assert other.status_code == 422
    assert await count(db) == 1
    # the same key sent at once by five retries: one write
    racing = {**headers, "Idempotency-Key": "k-2"}
    answers = await asyncio.gather(*(c.post("/test/incidents", json={"title": "z"},
                                            headers=racing) for _ in range(5)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert await count(db) == 2


async def test_bodies_are_bounded_and_cors_is_closed(client) -> None:
    c, db = client
    big = await c.post("/test/incidents", content=b"x" * 2_000_000,
                       headers=bearer(await token(db, "write")))
    assert big.status_code == 413 and big.json()["errors"][0]["field"] == "body"
    preflight = await c.options("/v1/sets", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers
    assert await count(db) == 0


def test_token_cli_shows_the_token_once(pg: TestCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)
    created = subprocess.run([sys.executable, "-m", "cardmint", "token", "create", "--owner",
                              "auth-test-cli", "--scope", "write", "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    value = json.loads(created.stdout)["token"]
    assert value.startswith("cm_") and len(value) > 40
    listed = subprocess.run([sys.executable, "-m", "cardmint", "token", "list", "--json"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0 and value not in listed.stdout
    assert any(t["owner"] == "auth-test-cli" for t in json.loads(listed.stdout))
    bad = subprocess.run([sys.executable, "-m", "cardmint", "token", "create", "--owner", "x",
                          "--scope", "root"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert bad.returncode == 3 and "scope" in bad.stderr
