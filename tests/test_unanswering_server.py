"""A server that stops answering (issue 18: a leader's host cut off) costs a 503 within
the client's bound, not a hang. Without a network namespace: a SIGSTOPped backend keeps
its socket open and answers nothing, as a partitioned host does; a listener that never
speaks stands in for a host whose SYN goes unanswered."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from cardmint.config import secret
from cardmint.db import Database
from cardmint.db.hosts import HostOrder, hosts_of, on_host
from cardmint.db.pool import command_timeout
from cardmint.errors import DatabaseUnavailable
from support import TestCluster

# Short server-side bounds, so the client's bound is short too (1.3 s)
FAST = {"statement_timeout_ms": 200, "sync_degrade_after_s": 0.2,
        "sync_guard_interval_s": 0.1, "pool_min": 1, "pool_max": 1}


@pytest.fixture
async def fast_db(pg: TestCluster) -> AsyncIterator[Database]:
    database = Database(pg.settings(**FAST))
    await database.open(monitor=False)
    try:
        yield database
    finally:
        await database.close()


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_the_client_bound_is_above_the_statement_timeout_and_the_sync_guard() -> None:
    from cardmint.config import Settings
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    bound = command_timeout(s)
    assert bound is not None
    assert bound > s.statement_timeout_ms / 1000
    assert bound > s.sync_degrade_after_s + s.sync_guard_interval_s
    assert command_timeout(Settings(_env_file=None, statement_timeout_ms=0)) is None  # type: ignore[call-arg]


async def test_a_write_to_a_server_that_stopped_answering_is_unavailable_not_a_hang(
        fast_db: Database) -> None:
    bound = command_timeout(fast_db.settings)
    assert bound is not None
    pid = await fast_db.fetchval("SELECT pg_backend_pid()")
    with stopped(pid):
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="timed out"):
            await fast_db.execute("SELECT 1")
        took = time.monotonic() - began
    assert bound <= took < bound + 1.0  # not twice the bound: no wait for a cancel
    # the timed-out connection was discarded, not lent again
    assert await fast_db.fetchval("SELECT pg_backend_pid()") != pid


async def test_a_transaction_on_a_server_that_stopped_answering_is_unavailable_once(
        fast_db: Database) -> None:
    bound = command_timeout(fast_db.settings)
    assert bound is not None
    began = 0.0
    with pytest.raises(DatabaseUnavailable, match="timed out"):
        async with fast_db.transaction() as tx:
            pid = await tx.fetchval("SELECT pg_backend_pid()")
            with stopped(pid):
                began = time.monotonic()
                await tx.execute("SELECT 1")
    assert time.monotonic() - began < bound + 1.0  # the rollback did not wait again
    assert await fast_db.fetchval("SELECT pg_backend_pid()") != pid


async def test_a_transaction_allowed_longer_waits_past_the_pool_bound(
        fast_db: Database) -> None:
    async with fast_db.transaction() as tx:
        await tx.execute("SET LOCAL statement_timeout = 3000")
        tx.allow(3000)
        await tx.execute("SELECT pg_sleep(1.5)")  # past the pool's 1.3 s


async def test_a_multi_host_dsn_skips_a_host_that_never_answers(pg: TestCluster) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the startup message, never answers
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        dsn = secret(pg.settings().database_url) or ""
        real = hosts_of(dsn)[0]
        both = on_host(dsn, f"127.0.0.1:{port},{real}")
        order = HostOrder()
        began = time.monotonic()
        conn = await order.connect(both, timeout=2.0)  # 1 s each: the mute host, then real
        await conn.close()
        assert time.monotonic() - began < 2.0
        began = time.monotonic()
        conn = await order.connect(both, timeout=2.0)  # the mute host is tried last now
        await conn.close()
        assert time.monotonic() - began < 0.9
    finally:
        server.close()
        await server.wait_closed()
