"""Work that runs for as long as the app runs, inside its lifespan (`cardmint serve`):
the intake worker and the monitor loop. Each gets a stop event, set before the app's
database closes, and is awaited so it finishes what it was doing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cardmint.dsn import redact

log = logging.getLogger("cardmint.background")

Job = Callable[[FastAPI, asyncio.Event], Coroutine[Any, Any, None]]


def run_beside(app: FastAPI, job: Job) -> None:
    """Wrap the app's lifespan so `job(app, stop)` runs beside it."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            stop = asyncio.Event()
            task = asyncio.create_task(job(a, stop))
            try:
                yield state
            finally:
                stop.set()
                # a job that ends in an error (its connection gone after a failover) is
                # logged in one line: the server still shuts down cleanly on Ctrl-C
                try:
                    await task
                except Exception as exc:  # any: the shutdown must finish
                    log.warning("%s ended with an error at shutdown: %s: %s",
                                getattr(job, "__qualname__", "background job"),
                                type(exc).__name__, redact(str(exc)))

    app.router.lifespan_context = lifespan


def run_monitor_in(app: FastAPI, interval_s: float | None = None, *,
                   backups: bool = True) -> None:
    """The monitor loop beside the app, so alerts fire, the dashboard's charts fill and
    the daily backup is taken without another command. It works only while it leads
    (one loop cluster-wide; see ops.monitor_loop). Beside it, on a local cluster, the
    healer restarts a node whose postmaster died (ops.monitor.heal)."""
    from cardmint.ops.monitor.heal import heal_loop
    from cardmint.ops.monitor.loop import run_loop

    async def job(a: FastAPI, stop: asyncio.Event) -> None:
        s = a.state.settings
        await asyncio.gather(
            run_loop(s, interval_s=interval_s or s.monitor_interval_s, backups=backups,
                     stop=stop),
            heal_loop(s, stop))

    run_beside(app, job)


def run_sync_guard_in(app: FastAPI) -> None:
    """On a local `--sync` cluster, the sync guard beside the app, so that losing the only
    synchronous standby stalls commits for `sync_degrade_after_s`, not for ever, without
    a separate `cardmint cluster sync-guard`. Only one guard acts at a time."""
    from cardmint.cluster.state import load
    from cardmint.ops.monitor.loop import Leadership
    from cardmint.ops.syncguard import LOCK_KEY, SyncGuard

    async def job(a: FastAPI, stop: asyncio.Event) -> None:
        s = a.state.settings
        state = load(s.home.resolve())
        if state is None or state.provider != "local" or not state.sync:
            return  # Patroni guards its own synchronous mode; async needs no guard
        leader = Leadership(s, LOCK_KEY, "cardmint-sync-guard-lock")
        try:
            await SyncGuard(s).run(stop=stop, lead=leader.held)
        finally:
            await leader.release()

    run_beside(app, job)
