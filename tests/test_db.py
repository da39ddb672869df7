"""The data layer against the real cluster: routing, read-your-writes, lag, retries,
latency, pool figures and the translation of errors."""

from __future__ import annotations

import asyncio

import pytest

from cardmint.config import secret
from cardmint.db import Database
from cardmint.errors import (
    ConstraintViolation,
    DatabaseUnavailable,
    NoPrimary,
    PoolExhausted,
    QueryTimeout,
    ValidationError,
)
from support import TestCluster, poll, replay_paused

PORT = "SELECT inet_server_port()"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ports(pg: TestCluster) -> tuple[int, int]:
    state = pg.cluster.state()
    return state.primary.port, state.replicas[0].port


async def test_reads_that_tolerate_lag_go_to_the_replica(pg: TestCluster, db: Database) -> None:
    primary, replica = await ports(pg)
    assert await db.fetchval(PORT) == primary
    assert await db.fetchval(PORT, stale_ok=True) == replica
    rows = await db.fetch("SELECT inet_server_port() AS p", stale_ok=True)
    assert rows[0]["p"] == replica


async def test_reads_after_a_write_and_in_a_transaction_stay_on_the_primary(
        pg: TestCluster) -> None:
    primary, replica = await ports(pg)
    clock = Clock()
    db = Database(pg.settings(read_after_write_s=2.0), clock=clock)
    await db.open(monitor=False)
    try:
        await db.execute("SELECT 1")  # a write, as far as routing knows
        assert await db.fetchval(PORT, stale_ok=True) == primary
        clock.now += 1.9
        assert await db.fetchval(PORT, stale_ok=True) == primary
        clock.now += 0.2
        assert await db.fetchval(PORT, stale_ok=True) == replica

        async def other_task() -> int:  # another request's context did not write
            return await db.fetchval(PORT, stale_ok=True)

        async with db.transaction() as tx:
            assert await tx.fetchval(PORT) == primary
            assert await db.fetchval(PORT, stale_ok=True) == primary  # joins the transaction
            assert await asyncio.create_task(other_task()) == replica
    finally:
        await db.close()


async def test_a_lagging_replica_is_skipped(pg: TestCluster) -> None:
    primary, _ = await ports(pg)
    db = Database(pg.settings(replica_lag_warn_s=0.05), clock=Clock())
    await db.open(monitor=False)
    try:
        async with replay_paused(pg):

            async def lagging() -> bool:
                await db.check_replicas()
                return (db.replicas[0].lag_s or 0) > 0.05

            await poll(lagging)
            assert db.route(stale_ok=True) is None
            assert await db.fetchval(PORT, stale_ok=True) == primary
    finally:
        await db.close()


async def test_a_lost_replica_connection_is_retried_on_the_primary(pg: TestCluster) -> None:
    primary, replica = await ports(pg)
    db = Database(pg.settings(), clock=Clock())
    await db.open(monitor=False)
    admin = await pg.admin("replica")
    try:
        assert await db.fetchval(PORT, stale_ok=True) == replica
        # lose the connection in the middle of a read: it is retried on the primary
        slow = asyncio.create_task(db.fetchval(
            "SELECT inet_server_port() FROM pg_sleep(0.3)", stale_ok=True))
        busy = "SELECT pid FROM pg_stat_activity WHERE application_name LIKE " \
               "'cardmint-replica/%' AND query LIKE '%pg_sleep(0.3)%' AND state = 'active'"
        pid = await poll(lambda: admin.fetchval(busy))
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        assert await slow == primary  # retried, no error
        assert db.replicas[0].healthy is False
        await db.check_replicas()  # the next check brings it back
        assert db.replicas[0].healthy is True
        assert await db.fetchval(PORT, stale_ok=True) == replica
    finally:
        await admin.close()
        await db.close()


async def test_a_replica_that_is_down_leaves_reads_on_the_primary(pg: TestCluster) -> None:
    primary, _ = await ports(pg)
    # a port nothing listens on stands for a replica that is down
    db = Database(pg.settings(), replica_dsns=["postgresql://u:pw@127.0.0.1:1/cardmint"],
                  clock=Clock())
    await db.open(monitor=False)
    try:
        assert db.replicas[0].healthy is False
        assert "pw" not in (db.replicas[0].error or "")
        assert await db.fetchval(PORT, stale_ok=True) == primary
    finally:
        await db.close()


async def test_latency_and_pool_figures(pg: TestCluster) -> None:
    db = Database(pg.settings(), clock=Clock())
    await db.open(monitor=False)
    try:
        db.reset_latency()
        for _ in range(20):
            await db.fetchval("SELECT 1")
        await db.fetchval("SELECT 1", stale_ok=True)
        stats = db.latency_stats()
        assert stats["primary"]["count"] == 20 and stats["replica"]["count"] == 1
        assert 0 < stats["primary"]["p50_ms"] <= stats["primary"]["p95_ms"] \
            <= stats["primary"]["p99_ms"] <= stats["primary"]["max_ms"] * 1.03
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with db.transaction():
                held.set()
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(3)]
        await poll(lambda: db.pool_stats()["in_use"] == 3)
        figures = db.pool_stats()
        assert figures["max"] == 20 and figures["utilization_pct"] == 15.0
        release.set()
        await asyncio.gather(*tasks)
        assert db.pool_stats()["in_use"] == 0
    finally:
        await db.close()


async def test_errors_are_translated(pg: TestCluster, db: Database) -> None:
    await db.execute("SELECT 1")
    with pytest.raises(ValidationError):
        await db.fetchval("SELECT 'abc'::int")
    conn_owner = await pg.admin()
    try:
        await conn_owner.execute("CREATE TABLE IF NOT EXISTS uniq_probe (k int "
                                 "CONSTRAINT uniq_probe_k_key UNIQUE)")
        await conn_owner.execute("GRANT ALL ON uniq_probe TO cardmint_app")
        await db.execute("INSERT INTO uniq_probe VALUES (1)")
        with pytest.raises(ConstraintViolation) as caught:
            await db.execute("INSERT INTO uniq_probe VALUES (1)")
        assert caught.value.constraint == "uniq_probe_k_key"
        assert caught.value.table == "uniq_probe"
        # a failed transaction writes nothing
        with pytest.raises(ConstraintViolation):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO uniq_probe VALUES (2)")
                await tx.execute("INSERT INTO uniq_probe VALUES (1)")
        assert await db.fetchval("SELECT count(*) FROM uniq_probe") == 1
    finally:
        await conn_owner.execute("DROP TABLE IF EXISTS uniq_probe")
        await conn_owner.close()


async def test_statement_timeout_and_exhausted_pool(pg: TestCluster) -> None:
    db = Database(pg.settings(statement_timeout_ms=50, pool_min=1, pool_max=1,
                              pool_acquire_timeout_s=0.2))
    await db.open(monitor=False)
    try:
        with pytest.raises(QueryTimeout):
            await db.fetchval("SELECT pg_sleep(2)")
        release = asyncio.Event()
        held = asyncio.Event()

        async def hold() -> None:
            async with db.transaction():
                held.set()
                await release.wait()

        task = asyncio.create_task(hold())
        await held.wait()
        with pytest.raises(PoolExhausted):
            await db.fetchval("SELECT 1")
        release.set()
        await task
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_a_write_on_a_replica_is_no_primary(pg: TestCluster) -> None:
    replica_dsn = secret(pg.settings().replica_urls[0])
    db = Database(pg.settings(), primary_dsn=replica_dsn, replica_dsns=[])
    await db.open(monitor=False)
    try:
        with pytest.raises(NoPrimary):
            await db.execute("CREATE TEMP TABLE t (x int)")
    finally:
        await db.close()


async def test_no_database_is_unavailable_and_the_message_hides_the_password(
        pg: TestCluster) -> None:
    settings = pg.settings(connect_timeout_s=1)
    for dsn in ("postgresql://cardmint_app:topsecret@127.0.0.1:1/cardmint",
                secret(settings.database_url).replace(pg.password("cardmint_app"), "topsecret")):
        with pytest.raises(DatabaseUnavailable) as caught:
            await Database(settings, primary_dsn=dsn).open()
        assert "topsecret" not in str(caught.value)


async def test_primary_dsn_finds_the_writable_node_among_several(pg: TestCluster) -> None:
    primary, replica = await ports(pg)
    url = secret(pg.settings().database_url)
    assert f"127.0.0.1:{primary},127.0.0.1:{replica}" in url
    # even with the replica listed first, writes land on the primary
    swapped = url.replace(f"127.0.0.1:{primary},127.0.0.1:{replica}",
                          f"127.0.0.1:{replica},127.0.0.1:{primary}")
    db = Database(pg.settings(), primary_dsn=swapped, replica_dsns=[])
    await db.open(monitor=False)
    try:
        assert await db.fetchval(PORT) == primary
    finally:
        await db.close()


async def test_json_arrives_as_python_values(db: Database) -> None:
    assert await db.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb") == {"a": [1, 2]}
    assert await db.fetchval("SELECT $1::jsonb", {"b": None}) == {"b": None}
