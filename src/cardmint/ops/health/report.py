"""`cardmint health`: every runbook check against a real cluster, one report.

Each node is asked directly (with the monitoring role), the primary also for
connections, storage and WAL archiving; a short probe of real queries through the
application's data layer gives the latency; the backup catalog gives the backup age.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from cardmint.cluster.pg.probe import parse_lsn
from cardmint.cluster.state import load as load_state
from cardmint.config import Settings, secret
from cardmint.db import Database, one
from cardmint.db.connect import connection
from cardmint.errors import CardmintError
from cardmint.ops import facts
from cardmint.ops.freeze import freeze_state
from cardmint.ops.health.checks import CRITICAL, OK, WARN, Check, check, worst, worst_severity
from cardmint.ops.health.pooler import pooler_check, pooler_status
from cardmint.ops.health.slots import slot_check

EXIT_CODES = {OK: 0, WARN: 1, CRITICAL: 2}


@dataclass
class HealthReport:
    status: str
    severity: str | None
    checked_at: datetime
    checks: list[Check]
    figures: dict[str, Any] = field(default_factory=dict)  # raw readings, for the monitor

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def check(self, name: str, node: str | None = None) -> Check:
        for c in self.checks:
            if c.name == name and (node is None or c.node == node):
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Exactly the design's contract."""
        keys = ("name", "status", "value", "unit", "warn", "critical", "node", "detail")
        return {
            "status": self.status,
            "severity": self.severity,
            "checked_at": self.checked_at.isoformat(),
            "checks": [{k: getattr(c, k) for k in keys} for c in self.checks],
        }


def node_targets(settings: Settings) -> list[tuple[str, str]]:
    """(name, DSN) of every node to ask: the monitoring DSNs, named as the local cluster
    names them; without them, the application's own DSNs."""
    urls = [secret(u) for u in settings.monitor_urls]
    if not urls:
        urls = [secret(settings.database_url)] + [secret(u) for u in settings.replica_urls]
    names = {}
    try:
        state = load_state(settings.home)
    except CardmintError:
        state = None
    if state is not None:
        names = {f"{n.host}:{n.port}": n.name for n in state.nodes}
    out = []
    for url in urls:
        if not url:
            continue
        hosts = urlsplit(url).netloc.rsplit("@", 1)[-1]
        out.append((names.get(hosts, hosts), url))
    return out


async def _ask_node(name: str, dsn: str, settings: Settings) -> facts.NodeFacts | str:
    try:
        async with connection(dsn, settings, application="cardmint-health") as conn:
            return await asyncio.wait_for(facts.node(conn, name), settings.connect_timeout_s)
    except (CardmintError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__


async def survey(settings: Settings) -> tuple[list[tuple[str, str]],
                                               list[facts.NodeFacts | str]]:
    """Ask every node at once: its facts, or why it could not be asked."""
    targets = node_targets(settings)
    answers = await asyncio.gather(*(_ask_node(n, d, settings) for n, d in targets))
    return targets, list(answers)


async def check_health(settings: Settings, *, now: datetime | None = None) -> HealthReport:
    """Run every check; never raises for what it finds (a dead node is a finding), only
    when the settings point at no cluster at all (`NoCluster`)."""
    checked_at = now or datetime.now(UTC)
    targets, answers = await survey(settings)
    if not targets:  # nothing to check: a setting to correct, not an outage
        raise settings.no_cluster()
    checks: list[Check] = []
    figures: dict[str, Any] = {"nodes": {}}
    nodes: list[facts.NodeFacts] = []
    for (name, _), answer in zip(targets, answers, strict=True):
        if isinstance(answer, str):
            figures["nodes"][name] = {"reachable": False, "error": answer}
            continue
        nodes.append(answer)
        figures["nodes"][name] = {"reachable": True, **facts.as_dict(answer)}
    primaries = [n for n in nodes if not n.in_recovery]

    # connectivity: every node answers SELECT 1, quickly
    for (name, _), answer in zip(targets, answers, strict=True):
        if isinstance(answer, str):
            is_primary_slot = not any(n.name == name for n in nodes) and not primaries
            fix = ("`cardmint cluster failover` (or start the primary again)"
                   if is_primary_slot else f"`cardmint cluster rejoin {name}`")
            checks.append(check(
                "connectivity", None, "ms", settings.latency_p95_warn_ms,
                settings.latency_p95_critical_ms, node=name,
                detail=f"unreachable: {answer}; to fix: {fix}",
                status=CRITICAL if is_primary_slot else WARN,
                on_warn="P1", on_critical="P0"))
        else:
            checks.append(check(
                "connectivity", answer.select1_ms, "ms", settings.latency_p95_warn_ms,
                settings.latency_p95_critical_ms, node=name,
                detail=f"SELECT 1 in {answer.select1_ms:.2f} ms ({answer.role})"))

    # role: exactly one primary, the rest in recovery
    if len(primaries) == 1:
        missing = [name for name, _ in targets if not any(n.name == name for n in nodes)]
        detail = (f"{primaries[0].name} is the primary; {len(nodes) - 1} of "
                  f"{len(targets) - 1} replica(s) in recovery")
        if missing:  # high availability is lost until they are back: P1, as the alert says
            detail += "; not answering: " + ", ".join(missing) + "; to fix: " + "; ".join(
                f"`cardmint cluster rejoin {m}`" for m in missing)
        # about the cluster, not the primary, when replicas are missing (the primary is fine)
        checks.append(check("role", 1, "primaries", None, None,
                            node=None if missing else primaries[0].name,
                            detail=detail, status=WARN if missing else None, on_warn="P1"))
    else:
        what = "no primary" if not primaries else \
            f"{len(primaries)} primaries ({', '.join(p.name for p in primaries)}): split brain"
        checks.append(check("role", len(primaries), "primaries", None, None, detail=what,
                            status=CRITICAL, on_critical="P0"))

    primary = primaries[0] if len(primaries) == 1 else None
    checks += _lag_checks(settings, nodes, primary)
    primary_dsn = dict(targets).get(primary.name) if primary else None
    if primary is not None and primary_dsn:
        checks += await _primary_checks(settings, primary, primary_dsn, figures)
    checks += await _application_checks(settings, figures)
    pooled = await pooler_status(settings)
    if pooled is not None:  # the connections check counts only what reaches the server
        figures["pooler"] = pooled
        checks.append(pooler_check(pooled))

    status = worst([c.status for c in checks])
    severity = worst_severity([c.severity for c in checks]) if status != OK else None
    return HealthReport(status, severity, checked_at, checks, figures)


def _lag_checks(settings: Settings, nodes: list[facts.NodeFacts],
                primary: facts.NodeFacts | None) -> list[Check]:
    out = []
    primary_lsn = parse_lsn(primary.lsn) if primary else None
    for n in nodes:
        if not n.in_recovery:
            continue
        lag_bytes = None
        if primary_lsn is not None:
            lag_bytes = max(0, primary_lsn - (parse_lsn(n.lsn) or 0))
        detail = f"{n.lag_s:.3f} s behind, {lag_bytes if lag_bytes is not None else '?'} bytes"
        c = check("replica_lag", n.lag_s, "s", settings.replica_lag_warn_s,
                  settings.replica_lag_critical_s, node=n.name, detail=detail)
        if not n.streaming and c.status == OK:
            # minor while its lag is within bounds (the lag checks take over): P2, as the
            # dashboard shows it
            c = check("replica_lag", n.lag_s, "s", settings.replica_lag_warn_s,
                      settings.replica_lag_critical_s, node=n.name, status=WARN,
                      detail=detail + "; not streaming from the primary; to fix: "
                      f"`cardmint cluster rejoin {n.name}` if it stays so")
        out.append(c)
    return out


async def _primary_checks(settings: Settings, primary: facts.NodeFacts, dsn: str,
                          figures: dict[str, Any]) -> list[Check]:
    s = settings
    out: list[Check] = []
    try:
        async with connection(dsn, settings, application="cardmint-health") as conn:
            conns = await facts.connections(conn, long_after_s=s.long_transaction_warn_s)
            store = await facts.storage(conn, capacity_bytes=s.storage_capacity_bytes)
            archive = await facts.archiver(conn)
            backlog = await _archive_backlog(conn)
            replication = await facts.replication(conn)
            frozen = await freeze_state(conn)
    except CardmintError as exc:
        return [check("connections", None, "", None, None, node=primary.name, status=WARN,
                      detail=f"cannot read the primary's statistics: {exc}")]
    figures.update(connections=facts.as_dict(conns), storage=facts.as_dict(store),
                   archiver=facts.as_dict(archive), archive_backlog=backlog)

    # connections: the PgBouncer trigger (runbook: 100), and the server's own limit
    most = conns.max_connections
    warn_at = min(float(s.pgbouncer_connections), 0.8 * most)
    out.append(check("connections", conns.total, "connections", warn_at, 0.95 * most,
                     node=primary.name,
                     detail=f"{conns.total} of max_connections {most}; PgBouncer is "
                            f"recommended above {s.pgbouncer_connections}"))

    # pool utilization: the busiest application process's pool, in use over its maximum
    if conns.app_busy:
        process, busy = max(conns.app_busy.items(), key=lambda kv: kv[1])
        pct = 100.0 * busy / s.pool_max
        detail = (f"busiest pool: {process}, {busy} of {s.pool_max} connections in use "
                  f"({len(conns.app_busy)} application process(es))")
    else:
        pct, detail = 0.0, "no application process connected"
    figures["pool_utilization_pct"] = round(pct, 1)
    out.append(check("pool_utilization", pct, "%", s.pool_utilization_warn_pct,
                     s.pool_utilization_critical_pct, node=primary.name, detail=detail))

    used = store.used_pct
    out.append(check(
        "storage", used, "%", s.storage_warn_pct, s.storage_critical_pct, node=primary.name,
        detail=f"database {store.database_bytes / 2**20:.1f} MiB, WAL "
               f"{store.wal_bytes / 2**20:.1f} MiB"
               + (f", {used:.1f} % of {store.capacity_bytes / 2**30:.1f} GiB"
                  if used is not None and store.capacity_bytes else "; capacity unknown")))

    out.append(_archive_check(s, primary.name, archive, backlog))
    out.append(slot_check(primary.name, replication["slots"]))
    if frozen:
        out.append(check("writes", None, "", None, None, node=primary.name, status=CRITICAL,
                         on_critical="P1",
                         detail=f"writes frozen since {frozen.get('frozen_at')} by "
                                f"{frozen.get('by')}: {frozen.get('reason')} "
                                "(`cardmint db thaw` allows them again)"))
    else:
        out.append(check("writes", None, "", None, None, node=primary.name,
                         detail="writes allowed"))

    oldest_tx = max((t["xact_age_s"] for t in conns.long_transactions), default=0.0)
    out.append(check(
        "long_transactions", oldest_tx, "s", s.long_transaction_warn_s,
        s.long_transaction_critical_s, node=primary.name,
        detail=f"{len(conns.long_transactions)} transaction(s) open longer than "
               f"{s.long_transaction_warn_s:g} s"
               + "".join(f"; pid {t['pid']} ({t['application']}) {t['xact_age_s']:.0f} s"
                         for t in conns.long_transactions[:3])))
    idle = max((t["state_age_s"] for t in conns.idle_in_transaction), default=0.0)
    out.append(check(
        "idle_in_transaction", idle, "s", s.idle_in_transaction_warn_s,
        s.idle_in_transaction_critical_s, node=primary.name,
        detail=f"{len(conns.idle_in_transaction)} session(s) idle in transaction"
               + "".join(f"; pid {t['pid']} ({t['application']}) {t['state_age_s']:.0f} s"
                         for t in conns.idle_in_transaction[:3])))
    return out


async def _archive_backlog(conn: asyncpg.Connection) -> dict[str, Any]:
    """Segments written but not yet archived (.ready files), and the oldest one's age."""
    row = one(await conn.fetchrow("""
        SELECT count(*) AS ready,
               coalesce(extract(epoch FROM now() - min(modification)), 0)::float8 AS oldest_s
        FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'
    """))
    return dict(row)


def _archive_check(s: Settings, node: str, archive: facts.Archiver,
                   backlog: dict[str, Any]) -> Check:
    waiting, oldest = backlog["ready"], backlog["oldest_s"]
    last = ("never" if archive.last_archived_age_s is None
            else f"{archive.last_archived_age_s:.0f} s ago")
    detail = (f"last segment archived {last}; {waiting} waiting (oldest {oldest:.0f} s); "
              f"{archive.failed_count} failed attempt(s)")
    if archive.archive_mode == "off":
        return check("wal_archiving", None, "s", s.archive_backlog_warn_s, None, node=node,
                     status=WARN, detail="archive_mode is off: point-in-time recovery is "
                                         "impossible")
    if archive.failing and waiting:
        return check("wal_archiving", oldest, "s", s.archive_backlog_warn_s, None, node=node,
                     status=CRITICAL, on_critical="P0",
                     detail=f"archive_command is failing (last failure on "
                            f"{archive.last_failed_wal}): {detail}")
    return check("wal_archiving", oldest, "s", s.archive_backlog_warn_s, None, node=node,
                 detail=detail)


async def _application_checks(settings: Settings, figures: dict[str, Any]) -> list[Check]:
    """Latency of real queries through the data layer, and the age of the last backup."""
    s = settings
    if not s.database_url:
        return []
    db = Database(s.model_copy(update={"pool_min": 1, "pool_max": 4}))
    try:
        await db.open(monitor=False)
    except CardmintError as exc:
        return [check("latency_p95", None, "ms", s.latency_p95_warn_ms,
                      s.latency_p95_critical_ms, status=CRITICAL, on_critical="P0",
                      detail=f"the application cannot reach the primary: {exc}")]
    out = []
    try:
        await probe(db, s.health_probe_queries)
        stats = db.latency_stats()
        primary = stats["primary"]
        figures["latency"] = stats
        out.append(check(
            "latency_p95", primary["p95_ms"], "ms", s.latency_p95_warn_ms,
            s.latency_p95_critical_ms,
            detail=f"{primary['count']} probe queries on the primary: p50 "
                   f"{primary['p50_ms']} ms, p99 {primary['p99_ms']} ms; replica p95 "
                   + (f"{stats['replica']['p95_ms']} ms" if stats['replica']['p95_ms']
                      is not None else "not measured (no replica answered)")))
        async with db.connection() as conn:
            backup = await facts.latest_backup(conn)
        figures["latest_backup"] = backup
        if backup is None:
            out.append(check("backup_age", None, "h", s.backup_age_warn_h,
                             s.backup_age_critical_h, status=WARN,
                             detail="no successful backup yet: run `cardmint backup create`"))
        else:
            hours = backup["age_s"] / 3600
            out.append(check("backup_age", hours, "h", s.backup_age_warn_h,
                             s.backup_age_critical_h,
                             detail=f"latest backup {backup['id']} finished "
                                    f"{hours:.1f} h ago"
                                    + ("" if backup["verified"] else " (not verified)")))
    except CardmintError as exc:
        out.append(check("latency_p95", None, "ms", s.latency_p95_warn_ms,
                         s.latency_p95_critical_ms, status=CRITICAL,
                         detail=f"probe queries failed: {exc}"))
    finally:
        await db.close()
    return out


async def probe(db: Database, count: int) -> None:
    """Real queries: point reads of catalog cards (when loaded) on the primary and,
    where lag allows, the replicas; SELECT 1 otherwise."""
    try:
        ids = [r["id"] for r in await db.fetch("SELECT id FROM cards TABLESAMPLE SYSTEM (5) "
                                               "LIMIT 50")]
    except CardmintError:
        ids = []
    db.reset_latency()
    rng = random.Random()
    for i in range(count):
        if ids:
            await db.fetchrow("SELECT id, name, set_id FROM cards WHERE id = $1",
                              rng.choice(ids), stale_ok=i % 2 == 1)
        else:
            await db.fetchval("SELECT 1", stale_ok=i % 2 == 1)
