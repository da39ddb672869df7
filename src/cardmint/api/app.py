"""The application factory. The data layer opens with the app and closes with it; if the
database is not there at start-up the app starts anyway, answers 503, and keeps trying."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cardmint import __version__, web
from cardmint.api import (
    catalog,
    docs,
    health,
    intake,
    inventory,
    limits,
    metrics,
    prices,
    problems,
    scan,
    urlcheck,
)
from cardmint.catalog.cache import CatalogCache
from cardmint.cluster.state import with_topology
from cardmint.config import Settings, get_settings
from cardmint.db import Database
from cardmint.errors import DatabaseUnavailable
from cardmint.tokens import FailureLimiter

log = logging.getLogger("cardmint.api")
REOPEN_EVERY_S = 2.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or with_topology(get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings)
        app.state.db = db
        app.state.settings = settings
        app.state.catalog_cache = cache = CatalogCache(
            db, max_bytes=settings.catalog_cache_mb * 1024 * 1024)
        opener = asyncio.create_task(_open(db))
        stop = asyncio.Event()
        listener = asyncio.create_task(_listen(db, cache, stop, opener))
        try:
            yield
        finally:
            stop.set()
            opener.cancel()
            with suppress(asyncio.CancelledError):
                await opener
            await listener
            await db.close()

    # /docs from the package's own Swagger UI files (api/docs.py), never a CDN
    app = FastAPI(title="CardMint", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.auth_failures = FailureLimiter()
    # photo uploads: the photo's limit plus room for a form's other parts
    upload_bytes = settings.image_max_bytes + 64 * 1024
    limits.install(app, max_body_bytes=settings.api_max_body_bytes,
                   uploads={scan.UPLOAD_PATH: upload_bytes, web.SCAN_UPLOAD_PATH: upload_bytes,
                            inventory.IMPORT_PATH: settings.api_max_import_bytes,
                            web.IMPORT_UPLOAD_PATH: settings.api_max_import_bytes})
    urlcheck.install(app)
    problems.install(app)
    metrics.install(app)
    health.install(app)
    docs.install(app)

    app.include_router(catalog.router)
    app.include_router(scan.router)  # before intake's: it takes the uploads to /v1/captures
    app.include_router(intake.router)
    app.include_router(inventory.router)
    app.include_router(prices.router)
    web.mount(app)  # the server-rendered pages (cardmint.web), outside the OpenAPI schema
    if settings.trusted_proxies:  # added last, so it runs first: before the limiter reads
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


async def _listen(db: Database, cache: CatalogCache, stop: asyncio.Event,
                  opener: asyncio.Task[None]) -> None:
    """Once the data layer is open, the catalog cache's LISTEN for loads until `stop`."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([opener, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if db.is_open and not stop.is_set():
        await cache.listen(stop)


async def _open(db: Database) -> None:
    """Open the data layer, retrying while the database is unavailable."""
    while True:
        try:
            await db.open()
            return
        except DatabaseUnavailable as exc:
            log.warning("database unavailable, retrying in %.0f s: %s", REOPEN_EVERY_S, exc)
            await asyncio.sleep(REOPEN_EVERY_S)
