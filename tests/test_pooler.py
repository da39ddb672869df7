"""PgBouncer in front of the primary: many clients on few server connections, the data
layer's statement cache off behind it, its auth file in step after a rotation."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.local import pooler
from cardmint.cluster.pg import process
from cardmint.cluster.state import APP
from cardmint.config import secret
from cardmint.db import Database
from cardmint.db.pooled import behind_pooler
from cardmint.ops.health.report import check_health
from cardmint.ops.security.rotate import rotate
from support import poll, postgres_pids, start_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("pgbouncer") is None and not Path(
        "/usr/sbin/pgbouncer").is_file(), reason="PgBouncer is not installed (Debian package "
                                                 "pgbouncer; `make test` installs it as root)"),
]
CLIENTS = 300


async def _server_connections(admin: asyncpg.Connection) -> int:
    return await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                                APP)


async def test_many_clients_few_server_connections(work_root: Path,
                                                   template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "pooler", replicas=0)
    admin = await tc.admin()
    pid = None
    try:
        report = await pooler.up(tc.cluster)
        pid, port = report["pid"], report["port"]
        settings = tc.settings()
        dsn = secret(settings.database_url)
        assert f":{port}/" in dsn and behind_pooler(dsn, settings)
        assert not behind_pooler(secret(settings.migration_url), settings)

        # the data layer through it: parameterised queries and transactions, no cache
        db = Database(settings)
        await db.open(monitor=False)
        try:
            assert db.connect_args(dsn)["statement_cache_size"] == 0
            results = await asyncio.gather(*(
                db.fetchval("SELECT $1::int * 2", i) for i in range(500)))
            assert results == [i * 2 for i in range(500)]
            async with db.transaction() as tx:
                assert await tx.fetchval("SELECT $1::text || 'x'", "a") == "ax"
        finally:
            await db.close()

        # many clients at once hold few server connections
        peak = 0
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, await _server_connections(admin))
                await asyncio.sleep(0.01)

        async def client(i: int) -> int:
            conn = await asyncpg.connect(dsn, statement_cache_size=0,
                                         password=tc.password(APP))
            try:
                total = 0
                for j in range(5):
                    total += await conn.fetchval("SELECT $1::int + $2::int", i, j)
                return total
            finally:
                await conn.close()

        sampler = asyncio.create_task(sample())
        totals = await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        stop.set()
        await sampler
        assert totals == [5 * i + 10 for i in range(CLIENTS)]
        assert 0 < peak <= pooler.MAX_DB_CONNECTIONS

        status = await pooler.status(tc.cluster)
        assert status["running"] and not status["stale_target"]
        assert any(p["database"] == "cardmint" for p in status["pools"])
        assert status["server_connections"] <= pooler.MAX_DB_CONNECTIONS
        health = await check_health(tc.settings())
        assert health.check("pooler").status == "ok", health.check("pooler").detail
        assert health.check("latency_p95").status != "critical"  # its probe went through it

        # a rotated password works through the pooler at once
        rotated = await rotate(tc.settings(), [APP], force=True)
        assert rotated.ok
        conn = await asyncpg.connect(secret(tc.settings().database_url),
                                     password=tc.password(APP), statement_cache_size=0)
        await conn.close()

        down = await pooler.down(tc.cluster)
        assert down["stopped"] and not process.alive(pid)
        assert f":{port}/" not in secret(tc.settings().database_url)
    finally:
        await admin.close()
        if pid is not None and process.alive(pid):
            await pooler.stop(pid)
        await tc.cluster.down(purge=True)
    assert postgres_pids(tc.home) == set()
    await poll(lambda: pid is None or not process.alive(pid))
