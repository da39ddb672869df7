"""A single connection outside the pools, for administrative work (catalog loads as the
owner role, migrations' checks): same timeouts, same error translation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from cardmint.config import Settings
from cardmint.db import errors


@asynccontextmanager
async def connection(dsn: str, settings: Settings, *, application: str = "cardmint-admin",
                     where: str | None = None) -> AsyncIterator[asyncpg.Connection]:
    """`where` names the node in error messages (default: its host and port)."""
    where = where or _hosts(dsn)
    try:
        conn = await asyncpg.connect(
            dsn, timeout=settings.connect_timeout_s,
            server_settings={"application_name": application},
        )
    except Exception as exc:
        raise errors.translate(exc, where) from exc
    try:
        yield conn
    except asyncpg.PostgresError as exc:
        raise await errors.diagnose(conn, exc, where) from exc
    finally:
        await conn.close()


def _hosts(dsn: str) -> str:
    try:
        return urlsplit(dsn).netloc.rsplit("@", 1)[-1] or "the database"
    except ValueError:
        return "the database"
