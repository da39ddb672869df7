"""`cardmint worker`: process intake jobs (identify, price, stock or send to review).

Runs until Ctrl-C or SIGTERM, letting the jobs in progress finish; `--once` handles what is
ready now and exits. Exit 0, or 3 if the database cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.intake.worker import Worker


async def _work(s: Settings, *, concurrency: int, lease_s: float, poll_s: float,
                once: bool) -> dict[str, Any]:
    async with Database(s) as db:
        worker = Worker(db, concurrency=concurrency, lease_s=lease_s, poll_interval_s=poll_s)
        if once:
            # the loops' bounded batches, repeated until the queue has nothing ready
            while await worker.run_once() == worker.batch:
                pass
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await worker.run(stop)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        return {"worker": worker.name, "counts": worker.counts}


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        concurrency: Annotated[int, typer.Option(min=1, max=32,
                                                 help="Jobs processed at once.")] = 1,
        lease: Annotated[float, typer.Option(min=1.0, max=3600.0,
                                             help="Seconds a job is held before another "
                                                  "worker may take it over.")] = 60.0,
        poll: Annotated[float, typer.Option(min=0.05, max=60.0,
                                            help="Seconds between polls when idle.")] = 1.0,
        once: Annotated[bool, typer.Option("--once",
                                           help="Handle the ready jobs, then exit.")] = False,
        as_json: JsonOpt = False,
        home: HomeOpt = None,
    ) -> None:
        """Process intake jobs until Ctrl-C (or SIGTERM)."""
        if not as_json:
            logging.basicConfig(level=logging.INFO,
                                format="%(asctime)s %(levelname)s %(name)s %(message)s")
        result = run(_work(settings(home), concurrency=concurrency, lease_s=lease,
                           poll_s=poll, once=once))
        emit(result, as_json, lambda d: console.print(
            f"worker {d['worker']}: " + (", ".join(f"{n} {k}" for k, n in
                                                   sorted(d["counts"].items())) or "no jobs")))
