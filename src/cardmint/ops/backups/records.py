"""The backup catalog: the `backups` table, kept honest against the disk.

A row is `running` while pgbackrest works, then `ok` or `failed`. A command killed
half-way leaves `running` behind; `reconcile` (run by list, create and prune while they
hold the backup lock, so no backup is really running) marks such a row failed.
Backups in a repository without a row (taken before the table
existed, or newer than the backup a restored database came from) are entered.
Every statement runs as the owner role: a freeze withdraws only the app role's writes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.ops.backups import store

COLUMNS = ("id, status, started_at, finished_at, start_lsn, end_lsn, timeline, size_bytes, "
           "duration_s, throughput_mb_s, verified, verified_at, node, path, error")


async def available(conn: asyncpg.Connection) -> bool:
    """False on a database not migrated yet: backups then live on disk only, and are
    entered by the first `backup list` after `cardmint db upgrade`."""
    return bool(await conn.fetchval("SELECT to_regclass('backups') IS NOT NULL"))


async def start(conn: asyncpg.Connection, backup_id: str, started_at: datetime, node: str,
                path: Path) -> None:
    await conn.execute(
        "INSERT INTO backups (id, status, started_at, node, path) VALUES ($1, 'running', $2, "
        "$3, $4)", backup_id, started_at, node, str(path))


async def finish_ok(conn: asyncpg.Connection, meta: dict[str, Any]) -> None:
    """Record a complete backup from its metadata (insert or update: the row may be
    missing, or `running` from a command that died after the backup was complete)."""
    await conn.execute(
        """
        INSERT INTO backups (id, status, started_at, finished_at, start_lsn, end_lsn,
                             timeline, size_bytes, duration_s, throughput_mb_s, node, path)
        VALUES ($1, 'ok', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (id) DO UPDATE SET
            status = 'ok', started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
            start_lsn = EXCLUDED.start_lsn, end_lsn = EXCLUDED.end_lsn,
            timeline = EXCLUDED.timeline, size_bytes = EXCLUDED.size_bytes,
            duration_s = EXCLUDED.duration_s, throughput_mb_s = EXCLUDED.throughput_mb_s,
            node = EXCLUDED.node, path = EXCLUDED.path, error = NULL
        """,
        meta["id"], _ts(meta["started_at"]), _ts(meta["finished_at"]), meta["start_lsn"],
        meta["end_lsn"], meta["timeline"], meta["size_bytes"], meta["duration_s"],
        meta["throughput_mb_s"], meta.get("node"), meta.get("path"))


async def finish_failed(conn: asyncpg.Connection, backup_id: str, error: str) -> None:
    await conn.execute(
        "UPDATE backups SET status = 'failed', finished_at = greatest(now(), started_at), "
        "error = $2 WHERE id = $1 AND status <> 'ok'", backup_id, error[:2000])


async def rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    found = await conn.fetch(f"SELECT {COLUMNS} FROM backups ORDER BY started_at DESC, id DESC")
    return [dict(r) for r in found]


async def set_verified(conn: asyncpg.Connection, backup_id: str, ok: bool,
                       at: datetime) -> None:
    await conn.execute("UPDATE backups SET verified = $2, verified_at = $3 WHERE id = $1",
                       backup_id, ok, at)


async def delete(conn: asyncpg.Connection, ids: list[str]) -> None:
    if ids:
        await conn.execute("DELETE FROM backups WHERE id = ANY($1::text[])", ids)


async def delete_failed_before(conn: asyncpg.Connection, before: datetime, *,
                               dry_run: bool = False) -> int:
    """Failed attempts are history; they go with the retention period."""
    if dry_run:
        return int(await conn.fetchval(
            "SELECT count(*) FROM backups WHERE status = 'failed' AND started_at < $1", before))
    done = await conn.execute(
        "DELETE FROM backups WHERE status = 'failed' AND started_at < $1", before)
    return int(done.split()[-1])


async def reconcile(conn: asyncpg.Connection | None, s: store.Site, *,
                    holding_lock: bool,
                    on_disk: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Make the catalog tell the truth about pgBackRest's repositories (`on_disk`, read
    when not given); returns what it changed. An interrupted backup leaves nothing to
    clean here: pgBackRest resumes or removes it on its next run."""
    notes: list[str] = []
    if conn is None or not await available(conn):
        return notes
    if on_disk is None:
        on_disk = store.finished(s)
    catalogued = {r["id"]: r for r in await rows(conn)}
    for backup_id, row in catalogued.items():
        if row["status"] == "running" and holding_lock:
            if backup_id in on_disk:
                await finish_ok(conn, on_disk[backup_id])
                notes.append(f"{backup_id}: complete in the repository, marked ok")
            else:
                await finish_failed(conn, backup_id,
                                    "interrupted: the backup never completed")
                notes.append(f"{backup_id}: interrupted, marked failed")
        elif row["status"] == "ok" and backup_id not in on_disk:
            await finish_failed_missing(conn, backup_id)
            notes.append(f"{backup_id}: no repository holds it any more, marked failed")
    for backup_id, meta in on_disk.items():
        if backup_id not in catalogued:
            await finish_ok(conn, meta)
            notes.append(f"{backup_id}: found in the repository, entered in the catalog")
    return notes


async def finish_failed_missing(conn: asyncpg.Connection, backup_id: str) -> None:
    await conn.execute(
        "UPDATE backups SET status = 'failed', verified = false, "
        "error = 'no repository holds the backup' WHERE id = $1", backup_id)


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
