"""`cardmint storage`: where the disk goes (the runbook's "Storage Full" procedure), and
`storage vacuum`.

Usage is the data directory's filesystem (facts.storage); then the largest tables and
indexes, dead tuples with a bloat estimate, the WAL directory, the WAL archive and the
backups. The bloat estimate is the dead-tuple share of each table's heap: what a VACUUM
FULL (or pg_repack) could give back at most, once autovacuum has marked it reusable.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cardmint.config import Settings, admin_or_owner_dsn
from cardmint.db.connect import connection
from cardmint.errors import UsageError
from cardmint.ops import facts
from cardmint.ops.maintenance import require_window

TOP = 10

TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name,
       pg_total_relation_size(c.oid) AS total_bytes, pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       coalesce(s.n_live_tup, 0) AS live_tuples, coalesce(s.n_dead_tup, 0) AS dead_tuples,
       s.last_vacuum, s.last_autovacuum
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY total_bytes DESC, name
"""

INDEXES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, t.relname AS "table",
       pg_relation_size(c.oid) AS bytes, coalesce(s.idx_scan, 0) AS scans
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = c.oid
WHERE c.relkind = 'i' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY bytes DESC, name LIMIT $1
"""


def _dsn(settings: Settings) -> str:
    # revoking and VACUUM need the tables' owner; ending others' sessions and
    # pg_ls_waldir, the superuser
    return admin_or_owner_dsn(settings)


def dir_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under `path`; (0, 0) when it is not here."""
    total = count = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
                count += 1
            except FileNotFoundError:
                continue
    return total, count


def bloat(table: dict[str, Any]) -> dict[str, Any]:
    """Dead share of a table's tuples, and that share of its heap in bytes."""
    live, dead = table["live_tuples"], table["dead_tuples"]
    share = dead / (live + dead) if live + dead else 0.0
    return {"dead_pct": round(100 * share, 1),
            "bloat_bytes_estimate": int(table["heap_bytes"] * share)}


def level(used_pct: float | None, settings: Settings) -> str:
    if used_pct is None:
        return "ok"
    if used_pct >= settings.storage_critical_pct:
        return "critical"
    return "warn" if used_pct >= settings.storage_warn_pct else "ok"


async def report(settings: Settings) -> dict[str, Any]:
    async with connection(_dsn(settings), settings, application="cardmint-storage") as conn:
        usage = await facts.storage(conn, capacity_bytes=settings.storage_capacity_bytes)
        tables = [dict(r) for r in await conn.fetch(TABLES_SQL)]
        indexes = [dict(r) for r in await conn.fetch(INDEXES_SQL, TOP)]
    for t in tables:
        t.update(bloat(t))
    home = settings.home.resolve()
    archive_bytes, archive_files = dir_size(home / "backups" / "archive")
    backup_bytes, _ = dir_size(home / "backups")
    dead = sorted((t for t in tables if t["dead_tuples"]), key=lambda t: -t["dead_tuples"])
    return {
        "status": level(usage.used_pct, settings),
        "usage": facts.as_dict(usage),
        "thresholds": {"warn_pct": settings.storage_warn_pct,
                       "critical_pct": settings.storage_critical_pct},
        "largest_tables": tables[:TOP],
        "largest_indexes": indexes,
        "dead_tuples": dead[:TOP],
        "bloat_bytes_estimate": sum(t["bloat_bytes_estimate"] for t in tables),
        "wal_bytes": usage.wal_bytes,
        "archive": {"path": str(home / "backups" / "archive"), "bytes": archive_bytes,
                    "files": archive_files},
        "backups_bytes": backup_bytes,
    }


async def vacuum(settings: Settings, *, full: bool = False, force: bool = False,
                 tables: list[str] | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """VACUUM (ANALYZE) the application database, or the named tables; FULL rewrites
    them under an exclusive lock, so only inside a maintenance window unless forced."""
    if full:
        require_window("storage vacuum --full", force=force, now=now)
    statement = "VACUUM (FULL, ANALYZE)" if full else "VACUUM (ANALYZE)"
    async with connection(_dsn(settings), settings, application="cardmint-vacuum") as conn:
        targets = []
        for name in tables or []:
            # regclass prints the name quoted as SQL needs it; unknown names are refused
            relation = await conn.fetchval("SELECT to_regclass($1)::text", name)
            if relation is None:
                raise UsageError(f"no table {name!r} in the database")
            targets.append(relation)
        size = "SELECT pg_database_size(current_database())"
        before = await conn.fetchval(size)
        began = time.monotonic()
        await conn.execute(f"{statement} {', '.join(targets)}".strip())
        duration = time.monotonic() - began
        after = await conn.fetchval(size)
    return {"ok": True, "statement": statement, "tables": targets or None,
            "duration_s": round(duration, 3), "database_bytes_before": before,
            "database_bytes_after": after, "freed_bytes": max(0, before - after)}
