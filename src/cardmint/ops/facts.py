"""Readings: what a node, the host or the operations tables say right now.

Each function asks one question and returns plain data; judging it against thresholds
is `checks.py`'s job, so health, stats, the monitor and backup status share one reading
of each fact. Node readings run on a connection with pg_monitor (or superuser) rights.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.pg.probe import NODE_SQL
from cardmint.db import PooledConnection, one


@dataclass
class NodeFacts:
    name: str
    in_recovery: bool
    port: int
    data_directory: str
    max_connections: int
    lsn: str
    receive_lsn: str | None
    lag_s: float
    replay_lag_bytes: int
    streaming: bool
    timeline: int
    read_only: bool
    select1_ms: float  # the round trip of SELECT 1, measured before the rest

    @property
    def role(self) -> str:
        return "replica" if self.in_recovery else "primary"


async def node(conn: asyncpg.Connection, name: str) -> NodeFacts:
    began = time.perf_counter()
    await conn.fetchval("SELECT 1")
    select1_ms = (time.perf_counter() - began) * 1000
    row = one(await conn.fetchrow(NODE_SQL))
    return NodeFacts(name=name, select1_ms=round(select1_ms, 3), **dict(row))


@dataclass
class Connections:
    total: int
    max_connections: int
    by_state: dict[str, int]
    by_user: dict[str, int]
    by_application: dict[str, int]
    idle_in_transaction: list[dict[str, Any]] = field(default_factory=list)
    long_transactions: list[dict[str, Any]] = field(default_factory=list)
    # per application process ("cardmint/<pid>"): connections not idle
    app_busy: dict[str, int] = field(default_factory=dict)


async def connections(conn: asyncpg.Connection, *, long_after_s: float) -> Connections:
    rows = await conn.fetch("""
        SELECT pid, usename, application_name, state, client_addr::text AS client_addr,
               extract(epoch FROM now() - xact_start)::float8 AS xact_age_s,
               extract(epoch FROM now() - state_change)::float8 AS state_age_s,
               left(query, 200) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
    """)
    max_connections = await conn.fetchval("SELECT current_setting('max_connections')::int")

    def count(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rows:
            k = r[key] or "(none)"
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def brief(r: asyncpg.Record) -> dict[str, Any]:
        return {"pid": r["pid"], "user": r["usename"], "application": r["application_name"],
                "state": r["state"], "xact_age_s": round(r["xact_age_s"] or 0, 3),
                "state_age_s": round(r["state_age_s"] or 0, 3), "query": r["query"]}

    busy: dict[str, int] = {}
    for r in rows:
        app = r["application_name"] or ""
        if app.startswith("cardmint/"):
            busy.setdefault(app, 0)
            if r["state"] not in ("idle", None):
                busy[app] += 1
    return Connections(
        total=len(rows) + 1,  # this session counts against max_connections too
        max_connections=max_connections,
        by_state=count("state"),
        by_user=count("usename"),
        by_application=count("application_name"),
        idle_in_transaction=[brief(r) for r in rows
                             if (r["state"] or "").startswith("idle in transaction")],
        long_transactions=[brief(r) for r in rows
                           if r["xact_age_s"] is not None and r["xact_age_s"] > long_after_s],
        app_busy=busy,
    )


@dataclass
class Archiver:
    archived_count: int
    failed_count: int
    last_archived_wal: str | None
    last_archived_at: datetime | None
    last_failed_wal: str | None
    last_failed_at: datetime | None
    archive_mode: str
    # seconds since the last segment was archived; None if none ever was
    last_archived_age_s: float | None
    # a failure newer than the last success: archiving is stuck right now
    failing: bool


def archived_through(last_archived_wal: str | None, segment: str) -> bool:
    """Whether the archiver's last segment is `segment` or a later one of its timeline
    (WAL file names: 8 hex digits of timeline, then 16 of position)."""
    last = last_archived_wal or ""
    return len(last) == 24 and last[:8] == segment[:8] and last[8:] >= segment[8:]


async def archiver(conn: asyncpg.Connection) -> Archiver:
    row = one(await conn.fetchrow("""
        SELECT archived_count, failed_count, last_archived_wal,
               last_archived_time AS last_archived_at, last_failed_wal,
               last_failed_time AS last_failed_at,
               current_setting('archive_mode') AS archive_mode,
               extract(epoch FROM now() - last_archived_time)::float8 AS last_archived_age_s
        FROM pg_stat_archiver
    """))
    data = dict(row)
    failed, archived = data["last_failed_at"], data["last_archived_at"]
    data["failing"] = failed is not None and (archived is None or failed > archived)
    return Archiver(**data)


@dataclass
class Storage:
    database_bytes: int
    wal_bytes: int
    data_directory: str
    filesystem_total_bytes: int | None
    filesystem_used_bytes: int | None
    capacity_bytes: int | None  # what usage is measured against
    used_pct: float | None


async def storage(conn: asyncpg.Connection, *, capacity_bytes: int | None = None) -> Storage:
    """Database and WAL size; usage against a configured capacity, else against the data
    directory's filesystem (readable only when the node runs on this machine)."""
    row = one(await conn.fetchrow("""
        SELECT pg_database_size(current_database()) AS database_bytes,
               (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::bigint AS wal_bytes,
               current_setting('data_directory') AS data_directory
    """))
    total = used = None
    try:
        # as df counts: blocks reserved for root are neither used nor available to us
        st = os.statvfs(row["data_directory"])
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        total = used + st.f_bavail * st.f_frsize
    except OSError:
        pass
    if capacity_bytes:
        pct = 100.0 * (row["database_bytes"] + row["wal_bytes"]) / capacity_bytes
    elif total and used is not None:
        pct = 100.0 * used / total
    else:
        pct = None
    return Storage(database_bytes=row["database_bytes"], wal_bytes=row["wal_bytes"],
                   data_directory=row["data_directory"], filesystem_total_bytes=total,
                   filesystem_used_bytes=used, capacity_bytes=capacity_bytes or total,
                   used_pct=None if pct is None else round(pct, 2))


async def database_activity(conn: asyncpg.Connection) -> dict[str, Any]:
    """Cumulative counters of the current database; deltas over a window give TPS and
    the read/write ratio."""
    row = one(await conn.fetchrow("""
        SELECT xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched,
               tup_inserted, tup_updated, tup_deleted, clock_timestamp() AS at
        FROM pg_stat_database WHERE datname = current_database()
    """))
    return dict(row)


def activity_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """TPS, row reads and writes per second, read/write ratio and cache hit ratio."""
    seconds = max((after["at"] - before["at"]).total_seconds(), 1e-6)

    def delta(key: str) -> int:
        return int(after[key]) - int(before[key])

    reads = delta("tup_fetched")
    writes = delta("tup_inserted") + delta("tup_updated") + delta("tup_deleted")
    hits, disk = delta("blks_hit"), delta("blks_read")
    return {
        "window_s": round(seconds, 3),
        "tps": round((delta("xact_commit") + delta("xact_rollback")) / seconds, 1),
        "reads_per_s": round(reads / seconds, 1),
        "writes_per_s": round(writes / seconds, 1),
        "read_write_ratio": round(reads / writes, 2) if writes else None,
        "cache_hit_pct": round(100.0 * hits / (hits + disk), 2) if hits + disk else None,
    }


def cache_hit_pct(activity: dict[str, Any]) -> float | None:
    hits, disk = int(activity["blks_hit"]), int(activity["blks_read"])
    return round(100.0 * hits / (hits + disk), 2) if hits + disk else None


async def table_activity(conn: asyncpg.Connection, *,
                         exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Cumulative rows read (sequential + index fetches) and written in user tables,
    leaving out `exclude` (e.g. the monitor's own tables): the application's read/write
    mix, without the catalog reads every new connection makes."""
    row = one(await conn.fetchrow("""
        SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)::bigint AS reads,
               coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint AS writes,
               clock_timestamp() AS at
        FROM pg_stat_user_tables WHERE NOT relname = ANY($1::text[])
    """, list(exclude)))
    return dict(row)


async def replication(conn: asyncpg.Connection) -> dict[str, Any]:
    """On a primary: who streams from it and its slots (an inactive slot holds WAL)."""
    senders = await conn.fetch("""
        SELECT application_name, state, sync_state, client_addr::text AS client_addr,
               pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes,
               extract(epoch FROM replay_lag)::float8 AS replay_lag_s
        FROM pg_stat_replication ORDER BY application_name
    """)
    slots = await conn.fetch("""
        SELECT slot_name, active,
               pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
        FROM pg_replication_slots ORDER BY slot_name
    """)
    return {"senders": [dict(r) for r in senders], "slots": [dict(r) for r in slots]}


async def latest_backup(conn: asyncpg.Connection | PooledConnection) -> dict[str, Any] | None:
    """The newest successful backup in the catalog, or None (also when the table is not
    there yet: an unmigrated database has no backups)."""
    try:
        row = await conn.fetchrow("""
            SELECT id, finished_at, verified,
                   extract(epoch FROM now() - finished_at)::float8 AS age_s
            FROM backups WHERE status = 'ok' ORDER BY finished_at DESC LIMIT 1
        """)
    except asyncpg.UndefinedTableError:
        return None
    return dict(row) if row else None


@dataclass
class Host:
    cpu_pct: float | None
    memory_pct: float | None
    load_1m: float | None


def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values), idle


def cpu_times() -> tuple[int, int] | None:
    """(total, idle) jiffies since boot: two readings give CPU use between them, also
    when different processes took them (the monitor's stored samples)."""
    return _cpu_times()


class HostSampler:
    """CPU use between two calls (first call: since boot), memory in use, load."""

    def __init__(self) -> None:
        self._last = _cpu_times()

    def sample(self) -> Host:
        now = _cpu_times()
        cpu = None
        if now and self._last and now[0] > self._last[0]:
            total, idle = now[0] - self._last[0], now[1] - self._last[1]
            cpu = round(100.0 * (total - idle) / total, 1)
        elif now and now[0]:
            cpu = round(100.0 * (now[0] - now[1]) / now[0], 1)
        self._last = now
        memory = None
        try:
            info = {line.split(":")[0]: int(line.split()[1])
                    for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line}
            memory = round(100.0 * (1 - info["MemAvailable"] / info["MemTotal"]), 1)
        except (OSError, KeyError, ValueError, ZeroDivisionError):
            pass
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        return Host(cpu_pct=cpu, memory_pct=memory, load_1m=load)


def now() -> datetime:
    return datetime.now(UTC)


def as_dict(value: Any) -> dict[str, Any]:
    return asdict(value)


async def slow_queries(conn: asyncpg.Connection, limit: int = 10) -> list[dict[str, Any]]:
    """pg_stat_statements' costliest statements by mean time ([] if it is not installed)."""
    try:
        rows = await conn.fetch("""
            SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query, calls,
                   round(mean_exec_time::numeric, 3)::float8 AS mean_ms,
                   round(total_exec_time::numeric, 1)::float8 AS total_ms, rows
            FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY mean_exec_time DESC LIMIT $1
        """, limit)
    except (asyncpg.UndefinedTableError, asyncpg.ObjectNotInPrerequisiteStateError):
        return []
    return [dict(r) for r in rows]


async def table_sizes(conn: asyncpg.Connection, limit: int = 15) -> list[dict[str, Any]]:
    """The largest tables with their indexes' size and dead tuples."""
    rows = await conn.fetch("""
        SELECT s.relname AS table, pg_total_relation_size(s.relid) AS total_bytes,
               pg_relation_size(s.relid) AS table_bytes,
               pg_indexes_size(s.relid) AS index_bytes,
               s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
               CASE WHEN s.n_live_tup + s.n_dead_tup > 0
                    THEN round(100.0 * s.n_dead_tup / (s.n_live_tup + s.n_dead_tup), 1)
               END::float8 AS dead_pct,
               greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum
        FROM pg_stat_user_tables s
        ORDER BY pg_total_relation_size(s.relid) DESC LIMIT $1
    """, limit)
    return [dict(r) for r in rows]


async def index_sizes(conn: asyncpg.Connection, limit: int = 15) -> list[dict[str, Any]]:
    rows = await conn.fetch("""
        SELECT indexrelname AS index, relname AS table,
               pg_relation_size(indexrelid) AS bytes, idx_scan AS scans
        FROM pg_stat_user_indexes ORDER BY pg_relation_size(indexrelid) DESC LIMIT $1
    """, limit)
    return [dict(r) for r in rows]
