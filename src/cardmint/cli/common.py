"""Options and helpers several command groups share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cardmint.cluster.state import with_topology
from cardmint.config import Settings

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Cluster home (default $CARDMINT_HOME or ./.cardmint).",
                 show_default=False),
]


def settings(home: Path | None = None) -> Settings:
    """The settings (--home over CARDMINT_HOME), with the cluster state's DSNs and topology."""
    return with_topology(Settings(home=home) if home is not None else Settings())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is there (it is a dependency; the fallback is
    for odd platforms)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def with_database(home: Path | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(db)` on a small primary-only data layer, opened and closed around it."""
    from cardmint.db import Database

    db = Database(settings(home).model_copy(update={"pool_min": 1, "pool_max": 2}),
                  replica_dsns=[])
    await db.open(monitor=False)
    try:
        return await work(db)
    finally:
        await db.close()
