"""Streaming replication seen from the primary: slots, and waiting until standbys stream."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from cardmint.errors import ClusterError

STREAM_TIMEOUT_S = 30.0
SLOT_TIMEOUT_S = 10.0
SYNC_STATES = ("sync", "potential", "quorum")


async def ensure_slot(conn: asyncpg.Connection, slot: str) -> None:
    """A physical slot on the primary reserving WAL now, so the standby finds its WAL."""
    await conn.execute(
        "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS "
        "(SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", slot)


async def drop_slot(conn: asyncpg.Connection, slot: str,
                    timeout: float = SLOT_TIMEOUT_S) -> bool:
    """Drop `slot` once its WAL sender has gone (it outlives the standby for a moment).
    False if it is still there at the deadline (a standby streams on it)."""
    deadline = time.monotonic() + timeout
    while True:
        await conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                           "pg_replication_slots WHERE slot_name = $1 AND NOT active", slot)
        if not await conn.fetchval(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


async def wait_streaming(conn: asyncpg.Connection, names: list[str], *, sync: bool = False,
                         timeout: float = STREAM_TIMEOUT_S) -> set[str]:
    """Which of `names` stream from this primary (with `sync`: and have taken up their
    synchronous role), waiting until all do or the deadline. Streaming counts only past
    the primary's position now: right after a promotion a standby first streams the old
    timeline to its end, briefly, then reconnects for the new one."""
    deadline = time.monotonic() + timeout
    since = await conn.fetchval("SELECT pg_current_wal_lsn()")
    while True:
        rows = await conn.fetch("SELECT application_name, sync_state FROM pg_stat_replication "
                                "WHERE state = 'streaming' AND flush_lsn >= $1", since)
        states = {r["application_name"]: r["sync_state"] for r in rows}
        found = {n for n in names if n in states and (not sync or states[n] in SYNC_STATES)}
        if found == set(names) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


async def streaming_names(conn: asyncpg.Connection) -> set[str]:
    """The application names of the standbys streaming from this primary now."""
    rows = await conn.fetch("SELECT application_name FROM pg_stat_replication "
                            "WHERE state = 'streaming'")
    return {r["application_name"] for r in rows}


async def reconnect(conn: asyncpg.Connection, names: list[str],
                    timeout: float = STREAM_TIMEOUT_S) -> None:
    """End the named standbys' WAL senders on this primary and wait until each streams
    again on a new one: a fresh login, with whatever password its passfile holds now.
    Nothing about the standby's configuration changes, so nothing is logged."""
    before = {r["application_name"]: r["pid"] for r in await conn.fetch(
        "SELECT application_name, pid FROM pg_stat_replication")}
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication "
                       "WHERE application_name = ANY($1::text[])", names)
    deadline = time.monotonic() + timeout
    while True:
        now = {r["application_name"]: r["pid"] for r in await conn.fetch(
            "SELECT application_name, pid FROM pg_stat_replication WHERE state = 'streaming'")}
        late = [n for n in names if n not in now or now[n] == before.get(n)]
        if not late:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"{', '.join(late)} did not log in again within "
                               f"{timeout:.0f} s")
        await asyncio.sleep(0.05)
