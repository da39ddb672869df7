"""What `/metrics` reports about the cluster, read when Prometheus scrapes it.

Like postgres_exporter, every node of `settings.monitor_urls` is asked at scrape time
(with the monitoring role), so nothing goes stale; the operations tables (jobs, alerts,
incidents, backups, drills) are read through the application's data layer, and the host
from /proc. A node that does not answer is a reading (`up` False), a query the role may
not run is skipped and named in `errors`: a scrape never fails for what it finds.

`Scraper` lets concurrent scrapes share one read, so a burst of them opens one set of
connections, and counts the finished jobs (a scan of the whole table: 0.2 s at a million
jobs, bench/metrics.py) once a minute rather than at every scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.clock import utc
from cardmint.config import Settings
from cardmint.db import Database, one
from cardmint.db import errors as db_errors
from cardmint.db.connect import connection
from cardmint.dsn import redact
from cardmint.errors import CardmintError, DatabaseUnavailable
from cardmint.ops import facts, maintenance
from cardmint.ops.health.report import node_targets

log = logging.getLogger("cardmint.metrics")

APPLICATION = "cardmint-metrics"
# /proc/stat's first columns, as node_exporter names them (guest time is already in user)
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
DATABASE_COUNTERS = ("xact_commit", "xact_rollback", "blks_read", "blks_hit",
                     "tup_returned", "tup_fetched", "tup_inserted", "tup_updated",
                     "tup_deleted")
TABLE_COUNTERS = ("seq_tup_read", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del")
_EXPECTED: tuple[type[BaseException], ...] = (
    CardmintError, asyncpg.PostgresError, asyncpg.InterfaceError, *db_errors.CONNECTION_ERRORS)


@dataclass
class NodeScrape:
    name: str
    up: bool
    error: str | None = None
    is_replica: bool | None = None
    lag_s: float | None = None
    timeline: int | None = None
    max_connections: int | None = None
    activity: list[tuple[str, str, int]] = field(default_factory=list)  # datname, state, n
    databases: list[dict[str, Any]] = field(default_factory=list)  # pg_stat_database + size
    tables: list[dict[str, Any]] = field(default_factory=list)  # pg_stat_user_tables
    wal_bytes: int | None = None
    wal_segments: int | None = None
    storage_used_bytes: int | None = None
    storage_free_bytes: int | None = None
    archiver: dict[str, Any] | None = None  # counts, last archive age, .ready backlog
    senders: list[dict[str, Any]] = field(default_factory=list)  # on a primary
    slots: list[dict[str, Any]] = field(default_factory=list)  # on a primary


@dataclass
class AppScrape:
    up: bool  # the application's data layer reached the primary
    error: str | None = None
    queue: list[tuple[str, str, int]] = field(default_factory=list)  # kind, status, n
    # jobs succeeded and failed so far; None when this read did not count them
    outcomes: list[tuple[str, str, int]] | None = None
    alerts_firing: dict[str, int] = field(default_factory=dict)  # by severity
    incidents_open: dict[str, int] = field(default_factory=dict)  # open or mitigated
    last_backup: dict[str, Any] | None = None
    drills: list[dict[str, Any]] = field(default_factory=list)  # the latest of each kind
    last_sample_at: datetime | None = None  # the built-in monitor's latest round


@dataclass
class HostScrape:
    name: str
    cpu_seconds: dict[str, float]  # by mode, all CPUs together
    memory_total_bytes: int | None
    memory_available_bytes: int | None


@dataclass
class Scrape:
    nodes: list[NodeScrape]
    app: AppScrape | None  # None: no data layer to ask (a process without one)
    host: HostScrape
    maintenance_open: bool
    errors: list[str]
    duration_s: float


# -- nodes ------------------------------------------------------------------------------

ACTIVITY_SQL = """
    SELECT coalesce(datname, '') AS datname, coalesce(state, 'unknown') AS state,
           count(*)::int AS n
    FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2
"""
DATABASES_SQL = f"""
    SELECT datid::text AS datid, datname, numbackends, {", ".join(DATABASE_COUNTERS)},
           pg_database_size(datid) AS size_bytes
    FROM pg_stat_database WHERE datname IS NOT NULL ORDER BY datname
"""
TABLES_SQL = """
    SELECT current_database() AS datname, schemaname, relname, seq_tup_read,
           coalesce(idx_tup_fetch, 0) AS idx_tup_fetch, n_tup_ins, n_tup_upd, n_tup_del
    FROM pg_stat_user_tables ORDER BY schemaname, relname
"""
WAL_SQL = r"""
    SELECT count(*) FILTER (WHERE name ~ '^[0-9A-F]{24}$')::int AS segments
    FROM pg_ls_waldir()
"""
BACKLOG_SQL = """
    SELECT count(*)::int AS ready,
           coalesce(extract(epoch FROM now() - min(modification)), 0)::float8 AS oldest_s
    FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'
"""
SENDERS_SQL = """
    SELECT r.application_name, coalesce(host(r.client_addr), '') AS client_addr,
           coalesce(r.state, '') AS state, coalesce(s.slot_name, '') AS slot_name,
           pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::float8 AS lag_bytes
    FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
    ORDER BY r.application_name
"""
SLOTS_SQL = """
    SELECT slot_name, coalesce(database, '') AS database, active,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 AS retained_bytes
    FROM pg_replication_slots ORDER BY slot_name
"""


async def _node(name: str, dsn: str, s: Settings, errors: list[str]) -> NodeScrape:
    async def ask() -> NodeScrape:
        async with connection(dsn, s, application=APPLICATION, where=name) as conn:
            return await _read_node(conn, name, s, errors)

    try:
        return await asyncio.wait_for(ask(), 2 * s.connect_timeout_s)
    except _EXPECTED as exc:
        return NodeScrape(name, up=False, error=str(db_errors.translate(exc, name)))


async def _read_node(conn: asyncpg.Connection, name: str, s: Settings,
                     errors: list[str]) -> NodeScrape:
    n = await facts.node(conn, name)
    out = NodeScrape(name, up=True, is_replica=n.in_recovery, lag_s=n.lag_s,
                     timeline=n.timeline, max_connections=n.max_connections)

    async def part(what: str, read: Callable[[], Awaitable[None]]) -> None:
        try:
            await read()
        except asyncpg.PostgresError as exc:  # e.g. a role without pg_monitor
            errors.append(f"{name}: {what}: {redact(str(exc))}")

    async def activity() -> None:
        out.activity = [(r["datname"], r["state"], r["n"]) for r in
                        await conn.fetch(ACTIVITY_SQL)]

    async def databases() -> None:
        out.databases = [dict(r) for r in await conn.fetch(DATABASES_SQL)]

    async def tables() -> None:
        out.tables = [dict(r) for r in await conn.fetch(TABLES_SQL)]

    async def storage() -> None:
        store = await facts.storage(conn, capacity_bytes=s.storage_capacity_bytes)
        out.wal_bytes = store.wal_bytes
        out.wal_segments = await conn.fetchval(WAL_SQL)
        if s.storage_capacity_bytes:  # as the storage check measures it
            out.storage_used_bytes = store.database_bytes + store.wal_bytes
            out.storage_free_bytes = max(0, s.storage_capacity_bytes - out.storage_used_bytes)
        elif store.filesystem_total_bytes is not None:
            out.storage_used_bytes = store.filesystem_used_bytes
            out.storage_free_bytes = store.filesystem_total_bytes - (
                store.filesystem_used_bytes or 0)

    async def archiver() -> None:
        a = await facts.archiver(conn)
        backlog = one(await conn.fetchrow(BACKLOG_SQL))
        out.archiver = {"archived_count": a.archived_count, "failed_count": a.failed_count,
                        "last_archive_age_s": a.last_archived_age_s,
                        "ready": backlog["ready"], "oldest_ready_s": backlog["oldest_s"]}

    async def replication() -> None:
        out.senders = [dict(r) for r in await conn.fetch(SENDERS_SQL)]
        out.slots = [dict(r) for r in await conn.fetch(SLOTS_SQL)]

    for what, read in (("connections", activity), ("databases", databases),
                       ("tables", tables), ("storage", storage), ("archiver", archiver)):
        await part(what, read)
    if not n.in_recovery:
        await part("replication", replication)
    return out


# -- the operations tables, through the application's data layer -----------------------

APP_SQL = """
    SELECT
      (SELECT coalesce(jsonb_agg(jsonb_build_array(kind, status, n)), '[]')
         FROM (SELECT kind, status, count(*) AS n FROM processing_jobs
               WHERE status IN ('queued', 'running')  -- a partial index holds just these
               GROUP BY kind, status ORDER BY kind, status) j) AS queue,
      (SELECT coalesce(jsonb_object_agg(severity, n), '{}')
         FROM (SELECT severity, count(*) AS n FROM alerts WHERE status = 'firing'
               GROUP BY severity) a) AS alerts,
      (SELECT coalesce(jsonb_object_agg(severity, n), '{}')
         FROM (SELECT severity, count(*) AS n FROM incidents WHERE status <> 'resolved'
               GROUP BY severity) i) AS incidents,
      (SELECT to_jsonb(b) FROM (
         SELECT extract(epoch FROM finished_at)::float8 AS finished_at, size_bytes,
                duration_s
         FROM backups WHERE status = 'ok' ORDER BY finished_at DESC LIMIT 1) b) AS backup,
      (SELECT coalesce(jsonb_agg(d), '[]') FROM (
         SELECT DISTINCT ON (kind) kind, ok,
                extract(epoch FROM finished_at)::float8 AS finished_at,
                (report ->> 'write_outage_s')::float8 AS write_outage_s,
                (report ->> 'detection_s')::float8 AS detection_s,
                (report ->> 'promotion_s')::float8 AS promotion_s,
                (report ->> 'lost_writes')::float8 AS lost_writes
         FROM drills WHERE finished_at IS NOT NULL
         ORDER BY kind, started_at DESC, id DESC) d) AS drills,
      (SELECT max(taken_at) FROM monitor_samples) AS last_sample_at
"""
OUTCOMES_SQL = """
    SELECT kind, status, count(*)::bigint AS n FROM processing_jobs
    WHERE status IN ('succeeded', 'failed') GROUP BY kind, status ORDER BY kind, status
"""


async def _app(db: Database, *, outcomes: bool) -> AppScrape:
    try:
        row = one(await db.fetchrow(APP_SQL))
        finished = await db.fetch(OUTCOMES_SQL) if outcomes else None
    except DatabaseUnavailable as exc:
        return AppScrape(up=False, error=redact(str(exc)))
    except CardmintError as exc:  # reachable, but the tables are not there (unmigrated)
        return AppScrape(up=True, error=redact(str(exc)))
    return AppScrape(
        up=True, queue=[(k, st, int(n)) for k, st, n in row["queue"]],
        outcomes=None if finished is None else [(r["kind"], r["status"], r["n"])
                                                for r in finished],
        alerts_firing={k: int(v) for k, v in row["alerts"].items()},
        incidents_open={k: int(v) for k, v in row["incidents"].items()},
        last_backup=row["backup"], drills=row["drills"], last_sample_at=row["last_sample_at"])


# -- the host -----------------------------------------------------------------------------


def host() -> HostScrape:
    """CPU time by mode since boot and memory, as node_exporter reads them."""
    cpu: dict[str, float] = {}
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        tick = os.sysconf("SC_CLK_TCK")
        cpu = {mode: int(v) / tick for mode, v in zip(CPU_MODES, fields, strict=False)}
    except (OSError, ValueError):
        pass
    total = available = None
    try:
        info = {line.split(":")[0]: int(line.split()[1])
                for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line}
        total, available = info["MemTotal"] * 1024, info["MemAvailable"] * 1024
    except (OSError, KeyError, ValueError, IndexError):
        pass
    return HostScrape(socket.gethostname(), cpu, total, available)


# -- one scrape ------------------------------------------------------------------------


async def scrape(settings: Settings, db: Database | None, *, outcomes: bool = True,
                 now: datetime | None = None) -> Scrape:
    """Every node, the operations tables (the finished jobs too, with `outcomes`) and
    the host, at once; never raises for what it finds."""
    began = time.perf_counter()
    errors: list[str] = []
    targets = node_targets(settings)

    async def app() -> AppScrape | None:
        if db is None:
            return None
        try:
            return await asyncio.wait_for(_app(db, outcomes=outcomes),
                                          2 * settings.connect_timeout_s)
        except TimeoutError:
            return AppScrape(up=False, error="no answer in time")

    nodes, app_figures = await asyncio.gather(
        asyncio.gather(*(_node(n, d, settings, errors) for n, d in targets)), app())
    if app_figures is not None and app_figures.error:
        errors.append(f"application: {app_figures.error}")
    for error in errors:
        log.debug("metrics: %s", error)
    return Scrape(list(nodes), app_figures, host(),
                  maintenance.status(utc(now))["in_window"], errors,
                  round(time.perf_counter() - began, 4))


class Scraper:
    """Concurrent scrapes share the read in flight (shielded, so a client that goes away
    does not cancel it for the others); finished jobs are counted every
    `outcomes_every_s` and the last count is reported in between."""

    def __init__(self, settings: Settings, *, outcomes_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.outcomes_every_s, self.clock = outcomes_every_s, clock
        self._task: asyncio.Future[Scrape] | None = None
        self._outcomes: list[tuple[str, str, int]] | None = None
        self._counted_at = float("-inf")

    async def read(self, db: Database | None) -> Scrape:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._read(db))
        return await asyncio.shield(self._task)

    async def _read(self, db: Database | None) -> Scrape:
        began = self.clock()
        due = began - self._counted_at >= self.outcomes_every_s
        out = await scrape(self.settings, db, outcomes=due)
        if out.app is not None and out.app.outcomes is not None:
            self._outcomes, self._counted_at = out.app.outcomes, began
        elif out.app is not None:
            out.app.outcomes = self._outcomes
        return out
