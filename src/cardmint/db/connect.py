"""A single connection outside the pools, for administrative work (catalog loads as the
owner role, migrations' checks): same timeouts, same error translation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from cardmint.config import Settings
from cardmint.db import errors


@asynccontextmanager
async def connection(dsn: str, settings: Settings, *,
                     application: str = "cardmint-admin") -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(
            dsn, timeout=settings.connect_timeout_s,
            server_settings={"application_name": application},
        )
    except Exception as exc:
        raise errors.translate(exc, "the primary") from exc
    try:
        yield conn
    except asyncpg.PostgresError as exc:
        raise errors.translate(exc, "the primary") from exc
    finally:
        await conn.close()
