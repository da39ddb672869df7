"""The application factory. The data layer opens with the app and closes with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from cardmint import __version__
from cardmint.api import problems
from cardmint.config import Settings, get_settings
from cardmint.db import Database


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings)
        await db.open()
        app.state.db = db
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(title="CardMint", version=__version__, lifespan=lifespan)
    problems.install(app)

    def db(request: Request) -> Database:
        return request.app.state.db

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness and the primary's answer to SELECT 1 (503 when it cannot answer)."""
        database = db(request)
        await database.fetchval("SELECT 1")
        return {"status": "ok", "version": __version__, "pool": database.pool_stats()}

    @app.get("/v1/sets")
    async def sets(request: Request) -> dict[str, Any]:
        rows = await db(request).fetch(
            "SELECT id, name, series_id, series_name, release_date, printed_total, card_count "
            "FROM sets ORDER BY release_date, id", stale_ok=True)
        data = [dict(r) for r in rows]
        return {"data": data, "count": len(data), "totalCount": len(data)}

    @app.get("/v1/cards/{card_id}")
    async def card(card_id: str, request: Request) -> dict[str, Any]:
        row = await db(request).fetchrow("SELECT * FROM cards WHERE id = $1", card_id,
                                         stale_ok=True)
        if row is None:
            raise HTTPException(404, f"no card {card_id!r}")
        return {"data": dict(row)}

    return app
