"""Fixtures: one real local cluster (primary + replica) for the whole session.

Clusters are made by copying a template data directory that initdb makes once per
session. Everything lives under a fresh directory in /tmp (the PostgreSQL OS user must
be able to reach it, which pytest's own mode-700 temp root does not allow) and is
stopped by PID and deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cardmint.catalog.load import load_catalog
from cardmint.cluster.pg import roles
from cardmint.cluster.state import OWNER
from cardmint.config import secret
from cardmint.db import Database, migrate
from cardmint.db.connect import connection
from cardmint.dsn import redact, with_password
from support import TestCluster, replicas_caught_up, start_cluster

# The suite must not pick up a developer's cluster or DSNs.
for _key in [k for k in os.environ if k.startswith("CARDMINT_")]:
    del os.environ[_key]


class RedactedDsn(str):
    """A DSN that pytest's failure reports print without its password."""

    def __repr__(self) -> str:
        return repr(redact(self))


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cardmint-test-", dir=os.environ.get("TMPDIR", "/tmp")))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_dir(work_root: Path) -> Path:
    """Made by the first cluster that needs it, then copied."""
    return work_root / "template"


@pytest.fixture(scope="session")
async def pg(work_root: Path, template_dir: Path) -> AsyncIterator[TestCluster]:
    """The session's cluster, migrated to head."""
    tc = await start_cluster(work_root, template_dir, "main")
    try:
        await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))
        yield tc
    finally:
        await tc.cluster.down(purge=True)


@pytest.fixture
async def db(pg: TestCluster) -> AsyncIterator[Database]:
    database = Database(pg.settings())
    await database.open(monitor=False)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def empty_database(pg: TestCluster) -> AsyncIterator[str]:
    """DSN (owner role) of a new, empty database on the session cluster; dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await pg.admin(database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER {OWNER}')
        inner = await pg.admin(database=name)
        try:
            for statement in roles.database_sql():
                await inner.execute(statement)
        finally:
            await inner.close()
        primary = pg.cluster.state().primary
        dsn = f"postgresql://{OWNER}@{primary.host}:{primary.port}/{name}"
        yield RedactedDsn(with_password(dsn, pg.password(OWNER)))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def catalog(pg: TestCluster) -> AsyncIterator[Database]:
    """The full catalog, loaded once for the session, and a database to read it."""
    settings = pg.settings()
    async with connection(secret(settings.migration_url), settings) as conn:
        await load_catalog(conn)
    await replicas_caught_up(pg)
    database = Database(settings)
    await database.open(monitor=False)
    try:
        yield database
    finally:
        await database.close()
