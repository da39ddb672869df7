"""Alembic environment for CardMint.

Run through `cardmint.db.migrate` (which hands the DSN over in `config.attributes`) or
through the `alembic` command from the repository root (`-x dsn=...` or the settings'
CARDMINT_MIGRATION_URL). The DSN is never written to the ini file or to a log line.

Connections are made by asyncpg, wrapped by SQLAlchemy's asyncpg dialect, so migrations
need no second driver and accept exactly the DSNs the application's pools accept.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

import asyncpg
import sqlalchemy as sa
from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cardmint import inputs
from cardmint.db.schema import metadata
from cardmint.errors import ConfigError

config = context.config

# Only the `alembic` command has an ini file with logging sections; programmatic runs
# leave the caller's logging alone.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Serialises concurrent `upgrade` runs (two deploys at once): the second waits, then
# finds the work done. An arbitrary constant shared by every CardMint migrator.
MIGRATION_LOCK_KEY = 7_204_315_112

CONNECT_TIMEOUT_S = 10.0


def _dsn() -> str:
    """The DSN to migrate, from the caller, the command line, or the settings."""
    dsn = config.attributes.get("dsn")
    if not dsn:
        dsn = context.get_x_argument(as_dictionary=True).get("dsn")
    if not dsn:
        # late: reads the environment and, for the runbook's bare `alembic upgrade head`,
        # the local cluster's state (the one import of this script above db)
        from cardmint.cluster.state import with_topology
        from cardmint.config import get_settings

        url = with_topology(get_settings()).migration_url
        dsn = url.get_secret_value() if url is not None else None
    if not dsn:
        raise ConfigError(
            "no database to migrate: set CARDMINT_MIGRATION_URL (the owner role's DSN), "
            "start the local cluster, or pass -x dsn=postgresql://..."
        )
    # Accept the SQLAlchemy spelling too; asyncpg wants the plain libpq form.
    return dsn.replace("postgresql+asyncpg://", "postgresql://", 1)


def _next_rev_id(context_: Any, revision: Any, directives: list[Any]) -> None:
    """Number new revisions after the head (0001 -> 0002) unless --rev-id was given."""
    if not directives or getattr(config.cmd_opts, "rev_id", None):
        return
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        directives[0].rev_id = "0001"
    elif inputs.is_digits(head):
        directives[0].rev_id = f"{int(head) + 1:0{len(head)}d}"


def _configure_kwargs() -> dict[str, Any]:
    return {
        "target_metadata": metadata,
        "compare_type": True,
        "compare_server_default": True,
        "process_revision_directives": _next_rev_id,
    }


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it (no connection)."""
    context.configure(dialect_name="postgresql", literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, **_configure_kwargs())
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **_configure_kwargs())
    with context.begin_transaction():
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                           {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_async_migrations() -> None:
    dsn = _dsn()

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": "cardmint-migrate"},
        )

    # The URL only picks the dialect; asyncpg parses the real DSN in connect().
    engine = create_async_engine("postgresql+asyncpg://", async_creator=connect,
                                 poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
