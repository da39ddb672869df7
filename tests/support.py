"""Helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.pg import process
from cardmint.cluster.state import SUPERUSER, with_topology
from cardmint.config import Settings


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a cluster home, ignoring any .env file in the working directory, with
    the DSNs and topology of its state."""
    return with_topology(Settings(_env_file=None, home=home, **overrides))  # type: ignore[call-arg]


@dataclass
class TestCluster:
    __test__ = False  # not a test class, whatever its name

    cluster: LocalCluster
    home: Path

    def settings(self, **overrides: object) -> Settings:
        """Fresh settings: DSNs as the state file says now."""
        return make_settings(self.home, pg_template=self.cluster.template, **overrides)

    def password(self, role: str) -> str:
        return self.cluster.passwords()[role]

    async def admin(self, node: str = "primary", database: str = "cardmint") -> asyncpg.Connection:
        resolved = await self.cluster.resolve(node)
        return await asyncpg.connect(host=resolved.host, port=resolved.port, user=SUPERUSER,
                                     password=self.password(SUPERUSER), database=database)

    async def restored(self, port: int) -> asyncpg.Connection:
        """The superuser on a restored copy of this cluster (listening on `port`)."""
        return await asyncpg.connect(host="127.0.0.1", port=port, user=SUPERUSER,
                                     password=self.password(SUPERUSER), database="cardmint")


async def start_cluster(work_root: Path, template: Path, name: str,
                        replicas: int = 1) -> TestCluster:
    home = work_root / name
    cluster = LocalCluster(make_settings(home), template=template)
    await cluster.up(replicas=replicas)
    return TestCluster(cluster, home)


@asynccontextmanager
async def migrated_cluster(work_root: Path, template: Path, name: str, *, replicas: int = 1,
                           sync: bool = False, sample: bool = False,
                           probe: bool = False) -> AsyncIterator[TestCluster]:
    """A local cluster of its own for a test module: up, the schema at head, optionally the
    sample catalog (test-card writes against one of its cards) and the drills' probe table;
    purged on the way out, and then no PostgreSQL process of it may be left."""
    from cardmint.ops.drills.probe import prepare_probe_table

    home = work_root / name
    cluster = LocalCluster(make_settings(home), template=template)
    try:
        await cluster.up(replicas=replicas, sync=sync)
        tc = TestCluster(cluster, home)
        await migrate_with_sample(tc.settings(), sample=sample)
        if probe:
            await prepare_probe_table(tc.settings())
        yield tc
    finally:
        await cluster.down(purge=True)
    assert postgres_pids(home) == set()


async def poll(predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0,
               interval: float = 0.02) -> Any:
    """Until `predicate()` returns something truthy (awaited if need be), or fail at the
    deadline: the suite waits for state this way, never with a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def postgres_pids(home: Path) -> set[int]:
    """Every live PostgreSQL process whose command line names a directory under `home`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(home).encode() in cmd and b"postgres" in cmd and process.alive(int(entry.name)):
            found.add(int(entry.name))
    return found


@asynccontextmanager
async def replay_paused(pg: TestCluster) -> AsyncIterator[None]:
    """The replica stops replaying and the primary commits a write, so the replica falls
    behind for as long as the block runs; replay resumes on the way out."""
    replica = await pg.admin("replica")
    primary = await pg.admin("primary")
    table = f"lag_probe_{os.getpid()}"
    try:
        await replica.execute("SELECT pg_wal_replay_pause()")
        await primary.execute(f"CREATE TABLE IF NOT EXISTS {table} (x int)")
        await primary.execute(f"INSERT INTO {table} VALUES (1)")
        yield
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        await primary.execute(f"DROP TABLE IF EXISTS {table}")
        await replica.close()
        await primary.close()


async def replicas_caught_up(pg: TestCluster) -> None:
    """Until the replica has replayed everything the primary wrote so far (reads that
    tolerate lag may go there)."""
    primary, replica = await pg.admin("primary"), await pg.admin("replica")
    try:
        lsn = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
        await poll(lambda: replica.fetchval(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn))
    finally:
        await primary.close()
        await replica.close()


@asynccontextmanager
async def serving(app: Any, *, wait_open: bool = True) -> AsyncIterator[Any]:
    """An httpx client on the app in this process, with its lifespan run (and, by
    default, its data layer open)."""
    import httpx

    async with app.router.lifespan_context(app):
        if wait_open:
            await poll(lambda: app.state.db.is_open)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def migrate_with_sample(settings: Settings, *, sample: bool = True) -> None:
    """Schema at head and (with `sample`) the sample catalog (test-card writes against a
    catalog card)."""
    from cardmint.catalog.load import load_catalog
    from cardmint.config import secret
    from cardmint.db import migrate

    owner = secret(settings.migration_url)
    await asyncio.to_thread(migrate.upgrade, owner)
    if not sample:
        return
    conn = await asyncpg.connect(owner)
    try:
        await load_catalog(conn, sample=True)
    finally:
        await conn.close()
