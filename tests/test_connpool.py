"""The connection pool against the real primary: how many it lends, who waits, what a
returned connection carries back, expiry, a failed connect, cancellation, close."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import pytest

from cardmint.config import secret
from cardmint.db import Database
from cardmint.db.connpool import ConnectionPool
from cardmint.dsn import with_password
from support import TestCluster, poll

PID = "SELECT pg_backend_pid()"


def dsn(pg: TestCluster) -> str:
    return secret(pg.settings().database_url) or ""


async def test_lends_at_most_max_and_serves_waiters_first_come_first_served(
        pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=1, max_size=2).open()
    try:
        assert (pool.get_size(), pool.get_idle_size(), pool.get_max_size()) == (1, 1, 2)
        a, b = await pool.acquire(), await pool.acquire()
        assert a is not b and pool.get_size() == 2 and pool.get_idle_size() == 0
        served: list[str] = []

        async def wait(name: str) -> asyncpg.Connection:
            conn = await pool.acquire()
            served.append(name)
            return conn

        first = asyncio.create_task(wait("first"))
        await asyncio.sleep(0)  # queued before the second
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
        await pool.release(b)
        assert await first is b
        await pool.release(a)
        assert await second is a
        assert served == ["first", "second"] and pool.get_size() == 2
        await pool.release(a)
        await pool.release(b)
        await pool.release(b)  # twice: ignored
        assert pool.get_idle_size() == 2
    finally:
        await pool.close()
    assert pool.get_size() == 0


async def test_a_cancelled_waiter_takes_no_connection_and_no_slot(pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=0, max_size=1).open()
    try:
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)
        await pool.release(held)  # handed to the waiter, which is cancelled before it runs
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        async with asyncio.timeout(5):
            again = await pool.acquire()  # the connection came back to the pool
        assert again is held and pool.get_size() == 1
        await pool.release(again)
    finally:
        await pool.close()


async def test_a_transaction_left_open_is_rolled_back_on_return(pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=1, max_size=1).open()
    try:
        conn = await pool.acquire()
        # a session setting made in the transaction: kept if it committed, gone if not
        await conn.execute("BEGIN; SELECT set_config('application_name', 'left-open', false)")
        assert conn.is_in_transaction()
        await pool.release(conn)
        conn = await pool.acquire()
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SHOW application_name") != "left-open"
        await pool.release(conn)
    finally:
        await pool.close()


async def test_expired_connections_are_replaced_idle_now_lent_on_return(
        pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=2, max_size=2).open()
    try:
        lent = await pool.acquire()
        old_lent = await lent.fetchval(PID)
        idle = await pool.acquire()
        old_idle = await idle.fetchval(PID)
        await pool.release(idle)
        await pool.expire_connections()
        assert pool.get_idle_size() == 0 and pool.get_size() == 1  # the idle one is gone
        await pool.release(lent)
        assert pool.get_size() == 0
        a, b = await pool.acquire(), await pool.acquire()
        assert {await a.fetchval(PID), await b.fetchval(PID)}.isdisjoint({old_lent, old_idle})
        await pool.release(a)
        await pool.release(b)
        admin = await pg.admin()
        try:
            await poll(lambda: _gone(admin, {old_lent, old_idle}), timeout=10)
        finally:
            await admin.close()
    finally:
        await pool.close()


async def _gone(admin: asyncpg.Connection, pids: set[int]) -> bool:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)", list(pids))
    return not rows


async def test_a_failed_connect_frees_its_slot_and_new_arguments_are_used(
        pg: TestCluster) -> None:
    good = dsn(pg)
    pool = ConnectionPool(with_password(good, "not-the-password"), min_size=0, max_size=1)
    await pool.open()
    try:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await pool.acquire()
        assert pool.get_size() == 0
        pool.set_connect_args(good)
        conn = await pool.acquire()
        assert await conn.fetchval("SELECT 1") == 1
        await pool.release(conn)
    finally:
        await pool.close()


async def test_a_waiter_gets_the_slot_of_a_closed_connection(pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=0, max_size=1).open()
    try:
        conn = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)
        conn.terminate()  # a statement timed out: cut, then returned
        await pool.release(conn)
        async with asyncio.timeout(10):
            fresh = await waiter
        assert fresh is not conn and await fresh.fetchval("SELECT 1") == 1
        assert pool.get_size() == 1
        await pool.release(fresh)
    finally:
        await pool.close()


async def test_close_waits_for_lent_connections_and_refuses_new_loans(
        pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=2, max_size=2).open()
    lent = await pool.acquire()
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(0)
    assert not closing.done()
    with pytest.raises(asyncpg.InterfaceError):
        await pool.acquire()
    assert await lent.fetchval("SELECT 1") == 1  # still usable until returned
    await pool.release(lent)
    async with asyncio.timeout(10):
        await closing
    assert lent.is_closed() and pool.get_size() == 0


async def test_terminate_cuts_lent_connections_and_fails_waiters(pg: TestCluster) -> None:
    pool = await ConnectionPool(dsn(pg), min_size=0, max_size=1).open()
    lent = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    pool.terminate()
    with pytest.raises(asyncpg.InterfaceError):
        await waiter
    assert lent.is_closed() and pool.get_size() == 0


async def test_open_raises_and_leaves_nothing_open_when_a_connect_fails(
        pg: TestCluster) -> None:
    pool = ConnectionPool(with_password(dsn(pg), "wrong"), min_size=3, max_size=3)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await pool.open()
    assert pool.get_size() == 0


async def test_a_statement_cancelled_on_the_client_does_not_leave_its_connection_busy(
        pg: TestCluster) -> None:
    db = Database(pg.settings(pool_min=1, pool_max=1), replica_dsns=[])
    await db.open(monitor=False)
    admin = await pg.admin()
    try:
        slow = asyncio.create_task(db.fetchval("SELECT pg_sleep(30)"))

        async def sleeping() -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
                "AND state = 'active'"))
        await poll(sleeping, timeout=10)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        async with asyncio.timeout(10):  # the one slot serves at once, on a fresh connection
            assert await db.fetchval("SELECT 1") == 1
        await poll(lambda: _not(sleeping()), timeout=10)  # the server let the sleep go
    finally:
        await admin.close()
        await db.close()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check
