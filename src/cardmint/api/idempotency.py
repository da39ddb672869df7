"""`Idempotency-Key` on POSTs: a retried request never writes twice.

A key belongs to the token that sent it and is bound to the whole request: its method,
path, query string and body (a SHA-256 of them). The key's row and the request's writes
commit in one transaction, so either both exist or neither does. A second request with
the key waits on the first (the row's primary key) and then replays its stored answer;
the same key with a different request (another body, or another `?location=`) is a 422.
Failures that are not the client's (5xx) store nothing, so the client may retry. A key
lives `TTL` (24 hours): after that it may be used afresh, and expired rows are pruned.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cardmint.db import Database, Transaction, one
from cardmint.tokens import Principal

HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
PRUNE_EVERY_S = 60.0
Run = Callable[[Transaction], Awaitable[tuple[int, BaseModel]]]


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def fingerprint_of(request: Request) -> Hasher:
    """The hash a key is bound to, with method, path and query fed in: the caller feeds
    the body (as it reads it, for a streamed one) and takes the digest."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return hashlib.sha256(f"{request.method} {target}\n".encode())


async def idempotent(request: Request, principal: Principal, run: Run, *,
                     fingerprint: bytes | None = None) -> JSONResponse:
    """Answer a POST by `run(tx)` once per key: (status, response model) inside one
    transaction. The answer is stored as the JSON it was sent as, and replayed as such.
    A route that streamed its body passes its `fingerprint` (see `fingerprint_of`)."""
    db: Database = request.app.state.db
    key = request.headers.get(HEADER)
    if key is None:
        async with db.transaction() as tx:
            status, answer = await run(tx)
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)
    if not 1 <= len(key) <= 200:
        raise HTTPException(400, f"{HEADER} must be 1 to 200 characters")
    if fingerprint is None:
        hasher = fingerprint_of(request)
        hasher.update(await request.body())
        fingerprint = hasher.digest()
    await _prune_now_and_then(request, db)
    who = principal.token_id
    async with db.transaction() as tx:
        # an expired key is free again (the prune may not have reached it yet)
        await tx.execute("DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 "
                         "AND created_at < now() - $3::interval", who, key, TTL)
        inserted = await tx.fetchval(
            "INSERT INTO idempotency_keys (token_id, key, method, path, request_hash) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
            who, key, request.method, str(request.url.path), fingerprint)
        if inserted:
            status, answer = await run(tx)
            body = answer.model_dump(mode="json")
            if status >= 500:
                raise HTTPException(status, body.get("detail", "failed"))
            await tx.execute(
                "UPDATE idempotency_keys SET status = $3, response = $4 "
                "WHERE token_id = $1 AND key = $2", who, key, status, body)
            return JSONResponse(body, status_code=status)
        stored = one(await tx.fetchrow(
            "SELECT request_hash, status, response FROM idempotency_keys "
            "WHERE token_id = $1 AND key = $2", who, key))
    if bytes(stored["request_hash"]) != fingerprint:
        raise HTTPException(422, f"this {HEADER} was used for a different request (method, "
                                 "path, query or body)")
    return JSONResponse(stored["response"], status_code=stored["status"],
                        headers={"Idempotent-Replayed": "true"})


async def prune(db: Database) -> int:
    """Delete the keys older than TTL; how many went."""
    done = await db.execute("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval",
                            TTL)
    return int(done.split()[-1])


async def _prune_now_and_then(request: Request, db: Database) -> None:
    """At most once a PRUNE_EVERY_S per process: the table stays a day's keys long."""
    state = request.app.state
    if time.monotonic() - getattr(state, "idempotency_pruned_at", float("-inf")) < \
            PRUNE_EVERY_S:
        return
    state.idempotency_pruned_at = time.monotonic()
    await prune(db)
