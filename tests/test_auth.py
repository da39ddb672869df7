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
from cardmint.api import idempotency
from cardmint.api.app import create_app
from cardmint.api.auth import FailureLimiter, Principal, require_scope
from cardmint.api.idempotency import idempotent
from cardmint.config import Settings
from cardmint.db import Database, Transaction
from cardmint.ops.loadtest.apiserver import serving as serving_process
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
    """Past the limit a client sending bad tokens waits, longer each time (429 with
    Retry-After); a valid token from the same address always passes (issue 15, item 4:
    ten bad tokens locked out every loopback client, valid tokens included)."""
    c, db = client
    now = [0.0]
    c.app.state.auth_failures = FailureLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert (await c.post("/test/incidents", headers=bearer("cm_x"))).status_code == 401
    waits = []
    for _ in range(4):
        limited = await c.post("/test/incidents", headers=bearer("cm_x"))
        assert limited.status_code == 429
        waits.append(int(limited.headers["retry-after"]))
    assert waits == [1, 2, 4, 8]  # backing off, not a lock
    valid = await c.post("/test/incidents", json={}, headers=bearer(await token(db, "write")))
    assert valid.status_code == 201  # meanwhile, from the same address
    now[0] += 61 + 8  # quiet for a window and past the wait: a fresh start
    assert (await c.post("/test/incidents", headers=bearer("cm_x"))).status_code == 401


def test_the_backoff_is_capped_and_memory_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=2, window_s=60, max_wait_s=900, clock=lambda: now[0])
    waits = [limiter.fail("10.0.0.1") for _ in range(20)]
    assert waits[:2] == [None, None] and waits[2:6] == [1, 2, 4, 8]
    assert max(w for w in waits if w) == 900 and limiter.retry_after("10.0.0.1") == 900
    assert limiter.retry_after("10.0.0.2") is None  # another address is not slowed
    for i in range(25_000):  # a scan of addresses within one window: memory stays bounded
        limiter.fail(f"2001:db8::{i:x}")
    assert len(limiter) <= 10_001


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


async def test_an_idempotency_key_is_bound_to_the_query_the_token_and_a_day(client) -> None:
    """Issue 15, item 5: the same key with `?location=BoxB` replayed the BoxA request;
    keys were shared by an owner's tokens; they never expired."""
    c, db = client
    writer = await token(db, "write")
    headers = {**bearer(writer), "Idempotency-Key": "import-1"}
    first = await c.post("/test/incidents?location=BoxA", json={"title": "q"}, headers=headers)
    assert first.status_code == 201
    other = await c.post("/test/incidents?location=BoxB", json={"title": "q"}, headers=headers)
    assert other.status_code == 422 and "query" in other.json()["detail"]
    same = await c.post("/test/incidents?location=BoxA", json={"title": "q"}, headers=headers)
    assert same.headers.get("idempotent-replayed") == "true"
    # another token of the same owner: its own keys
    second, _ = await tokens.create_token(db, owner="auth-test-write", scope="write")
    mine = await c.post("/test/incidents?location=BoxA", json={"title": "q"},
                        headers={**bearer(second), "Idempotency-Key": "import-1"})
    assert mine.status_code == 201 and "idempotent-replayed" not in mine.headers
    assert mine.json()["id"] != first.json()["id"]
    assert await count(db) == 2
    # a day later the key is free again, and expired keys are pruned
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    later = await c.post("/test/incidents?location=BoxA", json={"title": "q"}, headers=headers)
    assert later.status_code == 201 and "idempotent-replayed" not in later.headers
    assert await count(db) == 3
    assert await idempotency.prune(db) == 1  # the other token's expired key
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 1


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


async def test_serve_believes_no_forwarded_header_by_default(pg: TestCluster) -> None:
    """Issue 15, item 4, against `cardmint serve` itself: uvicorn's own proxy_headers
    believed X-Forwarded-For from loopback, so 25 bad tokens with a new address each got
    no 429, and X-Forwarded-Proto: https flipped the cookie's Secure flag."""
    async with serving_process(pg.settings(), extra_args=(
            "--no-worker", "--no-monitor", "--no-sync-guard")) as (url, _pid):
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as http:
            codes = [(await http.get("/v1/inventory/items", headers={
                **bearer("cm_wrong"), "X-Forwarded-For": f"198.51.100.{i}"})).status_code
                for i in range(25)]
            assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
            r = await http.post("/signin", data={"token": "cm_not-valid"},
                                headers={"X-Forwarded-Proto": "https", "accept": "text/html"})
            assert r.status_code == 429  # still the same client: loopback, the real peer
            db = Database(pg.settings(pool_min=1))
            await db.open(monitor=False)
            try:
                secret = await token(db, "read")
                signed = await http.post("/signin", data={"token": secret}, headers={
                    "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1"})
                assert signed.status_code == 303  # a valid token passes the backoff
                cookie = signed.headers["set-cookie"].lower()
                assert "secure" not in cookie  # plain http on loopback, whatever was claimed
                await db.execute("DELETE FROM api_tokens WHERE owner LIKE 'auth-test%'")
            finally:
                await db.close()


async def test_forwarded_headers_only_from_configured_proxies(pg: TestCluster) -> None:
    """CARDMINT_TRUSTED_PROXIES: the proxy's X-Forwarded-For names the client, so each
    client behind it is limited on its own, and X-Forwarded-Proto sets the scheme."""
    app = build_app(pg.settings(trusted_proxies=["127.0.0.1"]))
    async with serving(app) as c:
        db = app.state.db
        try:
            victim, attacker = {"X-Forwarded-For": "203.0.113.7"}, {
                "X-Forwarded-For": "203.0.113.66"}
            for _ in range(12):
                await c.post("/test/incidents", headers={**bearer("cm_x"), **attacker})
            assert (await c.post("/test/incidents", headers={
                **bearer("cm_x"), **attacker})).status_code == 429
            assert (await c.post("/test/incidents", headers={
                **bearer("cm_x"), **victim})).status_code == 401  # not limited
            ok = await c.post("/test/incidents", json={}, headers={
                **bearer(await token(db, "write")), **attacker})
            assert ok.status_code == 201  # a valid token passes even from there
            secret = await token(db, "read")
            https = await c.post("http://127.0.0.1/signin", data={"token": secret},
                                 headers={"X-Forwarded-Proto": "https"})
            assert "secure" in https.headers["set-cookie"].lower()
        finally:
            await db.execute("DELETE FROM incidents WHERE title LIKE 'auth-test%'")
            await db.execute("DELETE FROM api_tokens WHERE owner LIKE 'auth-test%'")

    untrusted = build_app(pg.settings())
    async with serving(untrusted) as c:
        https = await c.post("http://127.0.0.1/signin", data={"token": "cm_x"},
                             headers={"X-Forwarded-Proto": "https"})
        assert https.status_code == 401  # nothing believed: still loopback http
        secret = await token(untrusted.state.db, "read")
        plain = await c.post("http://127.0.0.1/signin", data={"token": secret},
                             headers={"X-Forwarded-Proto": "https"})
        assert "secure" not in plain.headers["set-cookie"].lower()
        await untrusted.state.db.execute(
            "DELETE FROM api_tokens WHERE owner LIKE 'auth-test%'")


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="not an address or network"):
        Settings(_env_file=None, trusted_proxies="*")  # type: ignore[call-arg]
    assert Settings(_env_file=None, trusted_proxies="127.0.0.1, 10.0.0.0/8"  # type: ignore[call-arg]
                    ).trusted_proxies == ["127.0.0.1", "10.0.0.0/8"]
