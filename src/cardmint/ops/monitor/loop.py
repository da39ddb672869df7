"""The monitor's loop, wherever it runs: `cardmint monitor` or inside `cardmint serve`.

Only one loop samples at a time, cluster-wide: each round it must hold a session advisory
lock on the primary (one connection of its own), so two servers and a `cardmint monitor`
never store the same moment twice. The lock goes with the connection, so after a failover
whichever loop reconnects first leads. A round that does not lead does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from cardmint.config import Settings, secret
from cardmint.db import Database
from cardmint.errors import CardmintError
from cardmint.ops.facts import HostSampler
from cardmint.ops.monitor import sample

LEADER_KEY = 0x6D6F6E69  # pg_try_advisory_lock: the one monitor loop that samples
BACKUP_EVERY_S = 60.0
log = logging.getLogger("cardmint.monitor")

Round = Callable[[dict[str, Any]], Awaitable[None] | None]


class Leadership:
    """A session advisory lock held on a connection of its own."""

    def __init__(self, settings: Settings, key: int = LEADER_KEY,
                 application: str = "cardmint-monitor-lock") -> None:
        self.settings = settings
        self.key, self.application = key, application
        self.conn: asyncpg.Connection | None = None

    async def held(self) -> bool:
        try:
            if self.conn is None or self.conn.is_closed():
                dsn = secret(self.settings.database_url)
                if not dsn:
                    return False
                self.conn = await asyncpg.connect(
                    dsn, timeout=self.settings.connect_timeout_s,
                    server_settings={"application_name": self.application})
            # re-taking a lock this session holds succeeds (and stacks; the session
            # ending releases every level)
            return bool(await self.conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                                 self.key))
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            log.info("%s: leadership unavailable: %s", self.application, type(exc).__name__)
            await self.release()
            return False

    async def release(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.close(timeout=2)
            except (OSError, TimeoutError, asyncpg.InterfaceError):
                conn.terminate()


async def run_loop(s: Settings, *, interval_s: float, webhook: str | None = None,
                   backups: bool = False, on_round: Round | None = None,
                   stop: asyncio.Event | None = None) -> None:
    """Rounds every `interval_s` until `stop` is set (or the task is cancelled); with
    `backups`, the daily backup schedule runs beside them, at most once a minute."""
    stop = stop or asyncio.Event()
    host, memory, db = HostSampler(), sample.AlertMemory(), None
    leader = Leadership(s)
    backup_task: asyncio.Task[dict[str, Any]] | None = None
    last_backup_turn = float("-inf")
    try:
        while not stop.is_set():
            began = time.monotonic()
            if await leader.held():
                if db is None:
                    db = await _open(s)
                report = await sample.run_once(s, webhook=webhook, host=host, db=db,
                                            interval_s=interval_s, memory=memory)
                data = report.to_dict()
                if backup_task is not None and backup_task.done():
                    data["backup_schedule"] = backup_task.result()
                    backup_task = None
                if backups and backup_task is None and \
                        began - last_backup_turn >= BACKUP_EVERY_S:
                    backup_task = asyncio.create_task(_backup_turn(s))
                    last_backup_turn = began
            else:
                data = {"leader": False}
            if on_round is not None:
                done = on_round(data)
                if asyncio.iscoroutine(done):
                    await done
            try:
                await asyncio.wait_for(stop.wait(),
                                       max(0.0, interval_s - (time.monotonic() - began)))
            except TimeoutError:
                pass
    finally:
        if backup_task is not None:
            await asyncio.wait([backup_task])  # never leave a backup half-made
        if db is not None:
            await db.close()
        await leader.release()


async def _open(s: Settings) -> Database | None:
    try:
        return await sample.open_database(s)
    except CardmintError:
        return None  # the round reports it; the next one tries again


async def _backup_turn(s: Settings) -> dict[str, Any]:
    """The daily backup and prune; a failure is reported (health's backup_age check and
    the alerts make it visible) but never stops the loop."""
    from cardmint.ops.backups import backup

    try:
        result = await backup.schedule_once(s)
    except CardmintError as exc:
        logging.getLogger("cardmint.backup").error("scheduled backup failed: %s", exc)
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "due": result["due"],
            "backup": (result["backup"] or {}).get("id")}
