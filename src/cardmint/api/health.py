"""Health endpoints in Patroni's manner: 200 or 503, so a load balancer or a probe can
read the answer from the status code alone."""

from __future__ import annotations

from typing import TypeVar

from fastapi import FastAPI, Query, Request, Response

from cardmint import __version__
from cardmint.api.models.health import Alive, Primary, Ready, Replicas
from cardmint.api.problems import responses
from cardmint.db import Database, migrate
from cardmint.errors import CardmintError

RETRY_AFTER = "2"
Answer = TypeVar("Answer", Ready, Primary, Replicas)


def _answer(response: Response, body: Answer) -> Answer:
    """200 if the body says ok, else 503 with Retry-After. Only the fields the check
    filled are sent (`response_model_exclude_unset`)."""
    if body.status != "ok":
        response.status_code = 503
        response.headers["Retry-After"] = RETRY_AFTER
    return body


def _unavailable(model: type[Ready | Primary | Replicas]) -> dict[int | str, dict[str, object]]:
    return {503: {"model": model, "description": "Not healthy (Retry-After); `reason` says "
                                                 "why"}}


def install(app: FastAPI) -> None:
    def db(request: Request) -> Database:
        db: Database = request.app.state.db
        return db

    @app.get("/health", response_model=Alive)
    async def alive() -> Alive:
        """The process is up (says nothing of the database)."""
        return Alive(status="ok", version=__version__)

    @app.get("/health/ready", response_model=Ready, response_model_exclude_unset=True,
             responses=_unavailable(Ready))
    async def ready(request: Request, response: Response) -> Ready:
        """The database answers and its schema is at the code's head."""
        head = migrate.head()
        try:
            revision = await db(request).fetchval(
                "SELECT string_agg(version_num, ',') FROM alembic_version")
        except CardmintError as exc:
            return _answer(response, Ready(status="unavailable", reason=str(exc), head=head))
        if revision != head:
            return _answer(response, Ready(status="unavailable", revision=revision, head=head,
                                           reason="schema is not at head"))
        return _answer(response, Ready(status="ok", revision=revision, head=head))

    @app.get("/health/primary", response_model=Primary, response_model_exclude_unset=True,
             responses=_unavailable(Primary))
    async def primary(request: Request, response: Response) -> Primary:
        """A writable primary is reachable through the application's pool."""
        try:
            in_recovery = await db(request).fetchval("SELECT pg_is_in_recovery()")
        except CardmintError as exc:
            return _answer(response, Primary(status="unavailable", reason=str(exc)))
        if in_recovery:
            return _answer(response, Primary(status="unavailable",
                                             reason="the node is in recovery"))
        return _answer(response, Primary.model_validate(
            {"status": "ok", "pool": db(request).pool_stats()}))

    @app.get("/health/replica", response_model=Replicas,
             responses={**_unavailable(Replicas), **responses(400)})
    async def replica(request: Request, response: Response,
                      lag: float | None = Query(None, ge=0, le=86_400,
                                                description="Maximum lag in seconds")
                      ) -> Replicas:
        """At least one replica is streaming within `lag` seconds (default: the warn
        threshold)."""
        database = db(request)
        limit = lag if lag is not None else database.settings.replica_lag_warn_s
        replicas = await database.check_replicas()
        usable = [r for r in replicas if r["healthy"] and (r["lag_s"] or 0) <= limit]
        return _answer(response, Replicas.model_validate(
            {"status": "ok" if usable else "unavailable", "max_lag_s": limit,
             "replicas": replicas}))
