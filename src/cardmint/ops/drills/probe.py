"""The drills' write probe: a row every few milliseconds through the application's own
`Database`, each stamped by the server with `clock_timestamp()` and its timeline, and
every acknowledged id recorded, so that a drill can say which writes were lost and how
long the application could not write."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cardmint.cluster.state import APP
from cardmint.config import Settings, secret
from cardmint.db import Database
from cardmint.db.connect import connection
from cardmint.errors import CardmintError, ClusterError

PROBE_INTERVAL_S = 0.005
RECOVERY_TIMEOUT_S = 30.0

# In a schema of its own: alembic's autogenerate compares `public` only.
PROBE_DDL = (
    "CREATE SCHEMA IF NOT EXISTS drill",
    "CREATE TABLE IF NOT EXISTS drill.probe (run text NOT NULL, id bigint NOT NULL, "
    "timeline int NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
    "PRIMARY KEY (run, id))",
    f"GRANT USAGE ON SCHEMA drill TO {APP}",
    f"GRANT SELECT, INSERT, DELETE ON drill.probe TO {APP}",
)
INSERT_SQL = ("INSERT INTO drill.probe (run, id, timeline) VALUES ($1, $2, "
              "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)")


@dataclass
class WriteProbe:
    """Sequential inserts through `db`; `acks` holds (id, monotonic time acknowledged)."""

    db: Database
    run: str
    interval_s: float = PROBE_INTERVAL_S
    acks: list[tuple[int, float]] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def loop(self) -> None:
        while not self._stop.is_set():
            self.attempts += 1
            ident = self.attempts
            try:
                await self.db.execute(INSERT_SQL, self.run, ident)
                self.acks.append((ident, time.monotonic()))
            except CardmintError as exc:  # unacknowledged: it may or may not be there
                self.failures[type(exc).__name__] += 1
            await asyncio.sleep(self.interval_s)

    def stop(self) -> None:
        self._stop.set()

    async def more(self, count: int = 1, timeout: float = RECOVERY_TIMEOUT_S) -> None:
        """Until `count` more writes are acknowledged (the application writes again)."""
        target = len(self.acks) + count
        await self.until(lambda: len(self.acks) >= target, timeout)

    async def until(self, predicate: Callable[[], bool],
                    timeout: float = RECOVERY_TIMEOUT_S) -> None:
        """Wait (with a deadline) until `predicate()` holds, e.g. on the acks so far."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise ClusterError(f"the write probe made no progress in {timeout:.0f} s "
                                   f"(failures: {dict(self.failures)})")
            await asyncio.sleep(0.005)


def outage(acks: list[tuple[int, float]], timelines: dict[int, int], killed_at: float,
           new_timeline: int) -> dict[str, float | None]:
    """Write outage as the application saw it: from the last acknowledged write on the
    old timeline to the first on the new one. Also from the kill to that first write."""
    old = [t for i, t in acks if timelines.get(i) != new_timeline]
    new = [t for i, t in acks if timelines.get(i) == new_timeline]
    last_old = max(old, default=None)
    first_new = min(new, default=None)
    gap = None if last_old is None or first_new is None else first_new - last_old
    return {"write_outage_s": None if gap is None else round(gap, 4),
            "kill_to_first_write_s": None if first_new is None
            else round(first_new - killed_at, 4),
            "acks_after_kill_on_old_timeline": sum(1 for t in old if t > killed_at)}


def lost(acks: list[tuple[int, float]], present: set[int]) -> list[int]:
    """Acknowledged ids the new primary does not have."""
    return [i for i, _ in acks if i not in present]


async def prepare_probe_table(settings: Settings) -> None:
    dsn = secret(settings.migration_url)
    if not dsn:
        raise ClusterError("no owner DSN (migration_url) to create the probe table with")
    async with connection(dsn, settings, application="cardmint-drill") as conn:
        for statement in PROBE_DDL:
            await conn.execute(statement)
