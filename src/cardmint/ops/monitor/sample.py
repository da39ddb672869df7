"""`cardmint monitor`: one round samples the cluster, stores the sample, judges the
stored window with the rules (`rules.py`) and brings the alerts in line (`alerts.py`).

A round never raises for what it finds: a node or a database out of reach is a finding.
When the application's DSN cannot reach the primary nothing can be stored; the round
then judges its own sample alone and keeps its alerts in the `AlertMemory` a loop passes
from round to round, to be recorded once the database is back.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from cardmint.clock import utc
from cardmint.cluster.pg.probe import parse_lsn
from cardmint.config import Settings, secret
from cardmint.db import Database
from cardmint.db import errors as db_errors
from cardmint.db.connect import connection
from cardmint.dsn import redact
from cardmint.errors import CardmintError, ConfigError, DatabaseUnavailable
from cardmint.ops import facts
from cardmint.ops.health.report import node_targets
from cardmint.ops.monitor.alerts import (
    AlertMemory,
    announce,
    as_alert,
    list_alerts,
    open_incidents,
    plain,
    reconcile,
    unrecorded,
)
from cardmint.ops.monitor.readings import OWN_TABLES, Sample
from cardmint.ops.monitor.rules import RULE_NAMES, evaluate, worst_severity

PROBE_QUERIES = 20
GAP_INTERVALS = 2.5  # samples further apart than this many intervals break a sustained run
LOCK_KEY = 0x63617264  # pg_advisory_xact_lock: one monitor reconciles at a time
EXIT_CODES = {None: 0, "P2": 1, "P1": 2, "P0": 2}
_EXPECTED: tuple[type[BaseException], ...] = (
    CardmintError, asyncpg.PostgresError, asyncpg.InterfaceError, *db_errors.CONNECTION_ERRORS)
__all__ = ["EXIT_CODES", "AlertMemory", "MonitorReport", "collect_sample", "latest_sample",
           "list_alerts", "load_window", "open_database", "prune_samples", "run_once",
           "store_sample"]


@dataclass
class MonitorReport:
    taken_at: datetime
    stored: bool  # the sample and the alerts reached the database
    firing: list[dict[str, Any]]  # every monitor alert firing after this round
    fired: list[dict[str, Any]]  # announced as firing this round
    resolved: list[dict[str, Any]]  # announced as resolved this round
    sample: Sample
    pruned: int = 0
    incidents: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def severity(self) -> str | None:
        return worst_severity(a["severity"] for a in self.firing)

    @property
    def exit_code(self) -> int:
        """0 nothing firing, 1 worst is P2, 2 worst is P1 or P0."""
        return EXIT_CODES[self.severity]

    def to_dict(self) -> dict[str, Any]:
        data = plain(asdict(self))
        return {**data, "severity": self.severity}


# -- sampling ---------------------------------------------------------------------------


async def _read_node(conn: asyncpg.Connection, name: str, s: Settings) -> dict[str, Any]:
    node = await facts.node(conn, name)
    conns = await facts.connections(conn, long_after_s=s.long_transaction_warn_s)
    store = await facts.storage(conn, capacity_bytes=s.storage_capacity_bytes)
    out: dict[str, Any] = {
        "reachable": True, "error": None, "role": node.role, "lsn": node.lsn,
        "lag_s": node.lag_s if node.in_recovery else None,
        "lag_bytes": node.replay_lag_bytes if node.in_recovery else None,
        "streaming": node.streaming, "timeline": node.timeline,
        "select1_ms": node.select1_ms, "connections": conns.total,
        "max_connections": conns.max_connections, "storage_pct": store.used_pct,
        "database_bytes": store.database_bytes, "wal_bytes": store.wal_bytes,
    }
    if not node.in_recovery:
        out["activity"] = await facts.database_activity(conn)
        out["tables"] = await facts.table_activity(conn, exclude=OWN_TABLES)
        out["replication"] = await facts.replication(conn)
        out["app_busy"] = conns.app_busy
    return out


async def _sample_node(name: str, dsn: str, s: Settings) -> dict[str, Any]:
    """A node's figures; a node that does not answer in time is a finding, not an error."""

    async def ask() -> dict[str, Any]:
        async with connection(dsn, s, application="cardmint-monitor") as conn:
            return await _read_node(conn, name, s)

    try:
        return await asyncio.wait_for(ask(), 2 * s.connect_timeout_s)
    except _EXPECTED as exc:
        return {"reachable": False, "error": str(db_errors.translate(exc, name))}


async def _probe(db: Database, s: Settings) -> dict[str, Any]:
    """The primary's latency over real point reads through the data layer."""

    async def reads() -> None:
        try:
            ids = [r["id"] for r in await db.fetch("SELECT id FROM cards LIMIT $1",
                                                   PROBE_QUERIES)]
        except DatabaseUnavailable:
            raise
        except CardmintError:  # no catalog table yet: reachable all the same
            ids = []
        db.reset_latency()
        for i in range(PROBE_QUERIES):
            if ids:
                await db.fetchrow("SELECT id, name, set_id FROM cards WHERE id = $1",
                                  ids[i % len(ids)])
            else:
                await db.fetchval("SELECT 1")

    limit = 2 * s.connect_timeout_s
    try:
        await asyncio.wait_for(reads(), limit)
    except TimeoutError:
        # slow, not down: what finished counts, and p95 is at least the time it took
        latency = db.latency_stats()["primary"]
        return {"reachable": True, "error": f"probe timed out after {limit:g} s",
                "latency": latency, "p95_ms": max(latency["p95_ms"] or 0, limit * 1000)}
    except CardmintError as exc:
        return {"reachable": False, "error": redact(str(exc))}
    latency = db.latency_stats()["primary"]
    return {"reachable": True, "error": None, "latency": latency, "p95_ms": latency["p95_ms"]}


def _delta(previous: Sample | None, key: str, primary: str | None,
           now: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Counters of the previous sample and these, if both came from the same primary
    (counters restart with a new primary or a stats reset)."""
    before = (previous or {}).get(key)
    if not before or not now or previous is None or previous.get("primary") != primary:
        return None
    before = {**before, "at": datetime.fromisoformat(before["at"])}
    after = {**now, "at": datetime.fromisoformat(now["at"])}
    return (before, after) if after["at"] > before["at"] else None


def _rates(previous: Sample | None, primary: str | None,
           activity: dict[str, Any] | None) -> dict[str, Any] | None:
    pair = _delta(previous, "activity", primary, activity)
    if pair is None or int(pair[1]["xact_commit"]) < int(pair[0]["xact_commit"]):
        return None
    return facts.activity_rates(*pair)


def _read_write(previous: Sample | None, primary: str | None,
                tables: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rows read and written in the application's tables since the previous sample."""
    pair = _delta(previous, "tables", primary, tables)
    if pair is None:
        return None
    before, after = pair
    reads, writes = after["reads"] - before["reads"], after["writes"] - before["writes"]
    if reads < 0 or writes < 0:
        return None
    return {"reads": reads, "writes": writes,
            "window_s": round((after["at"] - before["at"]).total_seconds(), 3),
            "ratio": round(reads / writes, 2) if writes else None}


def _host(reading: facts.Host, previous: Sample | None) -> dict[str, Any]:
    """CPU over the time since the previous sample when this host took it (a `--once`
    round is too short to measure anything but itself), else the sampler's figure."""
    name, times = socket.gethostname(), facts.cpu_times()
    cpu = reading.cpu_pct
    before = (previous or {}).get("host") or {}
    if times and before.get("name") == name and before.get("cpu_times"):
        total, idle = times[0] - before["cpu_times"][0], times[1] - before["cpu_times"][1]
        if total > 0 and idle >= 0:
            cpu = round(100.0 * (total - idle) / total, 1)
    return {"name": name, **asdict(reading), "cpu_pct": cpu,
            "cpu_times": list(times) if times else None}


async def collect_sample(settings: Settings, *, host: facts.HostSampler,
                         db: Database | None = None, previous: Sample | None = None,
                         now: datetime | None = None) -> Sample:
    """One round's figures: every node of `settings.monitor_urls` (role, lag, connections,
    storage), the primary's activity and pools, the probe's p95 through `db` (None skips
    the probe), the host's CPU and memory, and rates against `previous`."""
    s = settings
    targets = node_targets(s)
    if not targets:
        raise ConfigError("nothing to monitor: set CARDMINT_MONITOR_URLS or run "
                          "`cardmint cluster up`")
    sample: Sample = {"taken_at": utc(now)}
    # the probe first, so its own connections are idle when the nodes count busy ones
    app = await _probe(db, s) if db is not None else None
    sample["app"] = app
    answers = await asyncio.gather(*(_sample_node(n, d, s) for n, d in targets))
    nodes = {name: answer for (name, _), answer in zip(targets, answers, strict=True)}
    primaries = [n for n, f in nodes.items() if f["reachable"] and f["role"] == "primary"]
    primary = primaries[0] if len(primaries) == 1 else None
    activity = tables = busy = None
    if primary:
        activity = plain(nodes[primary].pop("activity"))
        tables = plain(nodes[primary].pop("tables"))
        busy = nodes[primary].pop("app_busy")
        head = parse_lsn(nodes[primary]["lsn"])
        for f in nodes.values():
            if f["reachable"] and f["role"] == "replica" and head is not None:
                f["behind_bytes"] = max(0, head - (parse_lsn(f["lsn"]) or 0))
    pool: dict[str, Any] = {"pool_max": s.pool_max, "processes": len(busy or {}),
                            "busiest": None, "busy": 0}
    if busy:
        pool["busiest"], pool["busy"] = max(busy.items(), key=lambda kv: kv[1])
    sample.update(
        nodes=nodes, primary=primary, activity=activity, tables=tables,
        rates=_rates(previous, primary, activity),
        read_write=_read_write(previous, primary, tables),
        latency_p95_ms=(app or {}).get("p95_ms"),
        pool=pool,
        pool_utilization_pct=round(100.0 * pool["busy"] / s.pool_max, 1) if busy else None,
        host=_host(host.sample(), previous),
    )
    return {**plain({k: v for k, v in sample.items() if k != "taken_at"}),
            "taken_at": sample["taken_at"]}


# -- the samples table ---------------------------------------------------------------


async def store_sample(db: Database, sample: Sample) -> int:
    figures = plain({k: v for k, v in sample.items() if k != "taken_at"})
    return int(await db.fetchval("INSERT INTO monitor_samples (taken_at, figures) "
                                 "VALUES ($1, $2) RETURNING id", sample["taken_at"], figures))


async def load_window(db: Database, *, since: datetime, until: datetime) -> list[Sample]:
    """Samples taken after `since` up to `until`, oldest first."""
    rows = await db.fetch("SELECT id, taken_at, figures FROM monitor_samples "
                          "WHERE taken_at > $1 AND taken_at <= $2 ORDER BY taken_at, id",
                          since, until)
    return [{**r["figures"], "taken_at": r["taken_at"], "id": r["id"]} for r in rows]


async def latest_sample(db: Database, *, until: datetime) -> Sample | None:
    row = await db.fetchrow("SELECT taken_at, figures FROM monitor_samples "
                            "WHERE taken_at <= $1 ORDER BY taken_at DESC, id DESC LIMIT 1",
                            until)
    return {**row["figures"], "taken_at": row["taken_at"]} if row else None


async def prune_samples(db: Database, *, before: datetime) -> int:
    done = await db.execute("DELETE FROM monitor_samples WHERE taken_at < $1", before)
    return int(done.split()[-1])


# -- one round ----------------------------------------------------------------------------


async def open_database(settings: Settings) -> Database:
    """A small primary-only data layer for the probe and the tables."""
    db = Database(settings.model_copy(update={"pool_min": 1, "pool_max": 4}),
                  replica_dsns=[])
    return await db.open(monitor=False)


async def run_once(settings: Settings, *, now: datetime | None = None,
                   webhook: str | None = None, host: facts.HostSampler | None = None,
                   db: Database | None = None, interval_s: float | None = None,
                   memory: AlertMemory | None = None) -> MonitorReport:
    """Sample, store, judge the stored window, reconcile the alerts and announce the
    changes. `db` (else one opened for this round), `host` and `memory` are what a loop
    keeps between rounds; `interval_s` (default the setting) sets the tolerated gap.
    Never raises for what it finds: an unreachable database is a finding."""
    began = time.perf_counter()
    now = utc(now)
    host = host or facts.HostSampler()
    webhook = webhook or secret(settings.alert_webhook_url)
    memory = memory if memory is not None else AlertMemory()
    max_gap = GAP_INTERVALS * (interval_s or settings.monitor_interval_s)
    errors: list[str] = []
    own = db is None
    app_error = None
    if own:
        try:
            db = await open_database(settings)
        except CardmintError as exc:
            db, app_error = None, redact(str(exc))
    try:
        previous = None
        if db is not None:
            try:
                previous = await latest_sample(db, until=now)
                if previous and (now - previous["taken_at"]).total_seconds() > max_gap:
                    previous = None  # deltas over a gap would not describe this moment
            except CardmintError as exc:
                errors.append(f"previous sample: {redact(str(exc))}")
        sample = await collect_sample(settings, host=host, db=db, previous=previous, now=now)
        if app_error is not None:
            sample["app"] = {"reachable": False, "error": app_error}
        report = None
        if db is not None and (sample["app"] or {}).get("reachable"):
            report = await _record(db, settings, sample, now, max_gap, memory, webhook,
                                   errors)
        if report is None:
            findings = evaluate([sample], now, settings, max_gap_s=max_gap)
            changes = unrecorded(findings, now, memory)
            started = {k: p.started_at for k, p in memory.pending.items()}
            firing = [as_alert(f, started.get(f.key), None) for f in findings]
            report = MonitorReport(now, False, firing, changes.fired, changes.resolved,
                                   sample, errors=errors)
            await announce(changes, webhook=webhook, stored=False)
    finally:
        if own and db is not None:
            await db.close()
    report.duration_s = round(time.perf_counter() - began, 3)
    return report


async def _record(db: Database, s: Settings, sample: Sample, now: datetime, max_gap: float,
                  memory: AlertMemory, webhook: str | None,
                  errors: list[str]) -> MonitorReport | None:
    """Store, judge and reconcile in one transaction; announce after it commits. None if
    the database failed meanwhile (the caller then judges the sample alone)."""
    horizon = timedelta(minutes=max(s.scale_latency_for_min, s.scale_cpu_for_min,
                                    s.scale_memory_for_min), seconds=max_gap)
    kept = {k: replace(p) for k, p in memory.pending.items()}
    try:
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await store_sample(db, sample)
            window = await load_window(db, since=now - horizon, until=now)
            findings = evaluate(window, now, s, max_gap_s=max_gap)
            changes = await reconcile(db, findings, now, memory)
            pruned = await prune_samples(
                db, before=now - timedelta(hours=s.monitor_retention_h))
    except CardmintError as exc:
        memory.pending = kept  # nothing was written: they are still only announced
        errors.append(f"recording: {redact(str(exc))}")
        return None
    await announce(changes, webhook=webhook, stored=True)
    opened: list[int] = []
    try:
        opened = await open_incidents(db, changes.new_p0, now)
    except CardmintError as exc:
        errors.append(f"opening an incident: {redact(str(exc))}")
    try:
        firing = [a for a in await list_alerts(db) if a["name"] in RULE_NAMES]
    except CardmintError as exc:
        errors.append(f"listing alerts: {redact(str(exc))}")
        firing = [as_alert(f, None, None) for f in findings]
    memory.known = {(a["name"], a["node"]) for a in firing}
    return MonitorReport(now, True, firing, changes.fired, changes.resolved, sample, pruned,
                         opened, errors)
