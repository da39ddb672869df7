"""`Idempotency-Key` on POSTs: a retried request never writes twice.

The key's row and the request's writes commit in one transaction, so either both exist
or neither does. A second request with the key waits on the first (the row's unique
index) and then replays its stored answer; the same key with a different body is a 422.
Failures that are not the client's (5xx) store nothing, so the client may retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cardmint.db import Database, Transaction, one
from cardmint.tokens import Principal

HEADER = "Idempotency-Key"
Run = Callable[[Transaction], Awaitable[tuple[int, BaseModel]]]


async def idempotent(request: Request, principal: Principal, run: Run) -> JSONResponse:
    """Answer a POST by `run(tx)` once per key: (status, response model) inside one
    transaction. The answer is stored as the JSON it was sent as, and replayed as such."""
    db: Database = request.app.state.db
    key = request.headers.get(HEADER)
    if key is None:
        async with db.transaction() as tx:
            status, answer = await run(tx)
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)
    if not 1 <= len(key) <= 200:
        raise HTTPException(400, f"{HEADER} must be 1 to 200 characters")
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + await request.body()
    ).digest()
    async with db.transaction() as tx:
        inserted = await tx.fetchval(
            "INSERT INTO idempotency_keys (key, owner, method, path, request_hash) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
            key, principal.owner, request.method, request.url.path, fingerprint)
        if inserted:
            status, answer = await run(tx)
            body = answer.model_dump(mode="json")
            if status >= 500:
                raise HTTPException(status, body.get("detail", "failed"))
            await tx.execute(
                "UPDATE idempotency_keys SET status = $3, response = $4 "
                "WHERE key = $1 AND owner = $2", key, principal.owner, status, body)
            return JSONResponse(body, status_code=status)
        stored = one(await tx.fetchrow(
            "SELECT request_hash, status, response FROM idempotency_keys "
            "WHERE key = $1 AND owner = $2", key, principal.owner))
    if bytes(stored["request_hash"]) != fingerprint:
        raise HTTPException(422, f"this {HEADER} was used for a different request")
    return JSONResponse(stored["response"], status_code=stored["status"],
                        headers={"Idempotent-Replayed": "true"})


