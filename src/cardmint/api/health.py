"""Health endpoints in Patroni's manner: 200 or 503, so a load balancer or a probe can
read the answer from the status code alone."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from cardmint import __version__
from cardmint.db import Database, migrate
from cardmint.errors import CardmintError

RETRY_AFTER = {"Retry-After": "2"}


def _answer(ok: bool, body: dict[str, Any]) -> JSONResponse:
    body = {"status": "ok" if ok else "unavailable", **body}
    return JSONResponse(body, status_code=200 if ok else 503,
                        headers=None if ok else RETRY_AFTER)


def install(app: FastAPI) -> None:
    def db(request: Request) -> Database:
        return request.app.state.db

    @app.get("/health")
    async def alive() -> dict[str, Any]:
        """The process is up (says nothing of the database)."""
        return {"status": "ok", "version": __version__}

    @app.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        """The database answers and its schema is at the code's head."""
        head = migrate.head()
        try:
            revision = await db(request).fetchval(
                "SELECT string_agg(version_num, ',') FROM alembic_version")
        except CardmintError as exc:
            return _answer(False, {"reason": str(exc), "head": head})
        ok = revision == head
        return _answer(ok, {"revision": revision, "head": head,
                            **({} if ok else {"reason": "schema is not at head"})})

    @app.get("/health/primary")
    async def primary(request: Request) -> JSONResponse:
        """A writable primary is reachable through the application's pool."""
        try:
            in_recovery = await db(request).fetchval("SELECT pg_is_in_recovery()")
        except CardmintError as exc:
            return _answer(False, {"reason": str(exc)})
        return _answer(not in_recovery, {"pool": db(request).pool_stats()}
                       if not in_recovery else {"reason": "the node is in recovery"})

    @app.get("/health/replica")
    async def replica(request: Request,
                      lag: float | None = Query(None, ge=0, le=86_400,
                                                description="Maximum lag in seconds")
                      ) -> JSONResponse:
        """At least one replica is streaming within `lag` seconds (default: the warn
        threshold)."""
        database = db(request)
        limit = lag if lag is not None else database.settings.replica_lag_warn_s
        replicas = await database.check_replicas()
        usable = [r for r in replicas if r["healthy"] and (r["lag_s"] or 0) <= limit]
        return _answer(bool(usable), {"max_lag_s": limit, "replicas": replicas})
