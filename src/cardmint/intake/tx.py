"""Run a group of writes atomically, whether or not the caller already opened a
transaction (the API's idempotency wrapper does; the worker and the CLI do not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cardmint.db import Database, Transaction

Executor = Database | Transaction


@asynccontextmanager
async def atomic(ex: Executor) -> AsyncIterator[Transaction]:
    """The caller's transaction if it passed one, else a new one on the primary."""
    if isinstance(ex, Transaction):
        yield ex
        return
    async with ex.transaction() as tx:
        yield tx
