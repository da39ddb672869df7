"""`cardmint drill failover`: the runbook's monthly failover drill, automated and measured.

A write probe inserts a row every few milliseconds through the application's own
`Database` (multi-host primary DSN, target_session_attrs=read-write), each stamped by the
server with `clock_timestamp()` and its timeline, and records every acknowledged id. The
primary's postmaster is SIGKILLed by PID; the loss is detected by polling that PID (and
the port); the replica with the most WAL is promoted (`cluster failover`, on connections
opened beforehand); `pg_is_in_recovery()` must be false on it; health and test-card run
against the new topology; the old primary rejoins. Then every acknowledged id must be on
the new primary. The report goes to the `drills` table and to
`$CARDMINT_HOME/drills/failover-<time>.md`.

The write outage is the gap between the last acknowledged write on the old timeline and
the first on the new one, as the application saw it.

On the Patroni engine (cluster.json's provider) the kill, detection, promotion and rejoin
are Patroni's (ops/patroni.py); the probe, checks, tally and report are the same.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.local.rejoin import RejoinReport
from cardmint.cluster.pg import process
from cardmint.cluster.state import APP, READY, ClusterState, Node
from cardmint.config import Settings, secret
from cardmint.db import Database
from cardmint.db.connect import connection
from cardmint.errors import CardmintError, ClusterError
from cardmint.ops.health.report import check_health
from cardmint.ops.health.testcard import run_test_card
from cardmint.ops.maintenance import require_window

PROBE_INTERVAL_S = 0.005
DETECT_POLL_S = 0.002
PORT_CHECK_EVERY = 5  # polls: the PID is the cheap signal, the port the remote one
WARMUP_WRITES = 40
RECOVERY_TIMEOUT_S = 30.0
DSN_FIELDS = ("database_url", "replica_urls", "migration_url", "readonly_url", "admin_url",
              "monitor_urls")

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
CONTRACT = ("ok", "provider", "detection_s", "promotion_s", "write_outage_s",
            "acknowledged_writes", "lost_writes", "old_primary", "new_primary", "health",
            "rejoined")


# -- the write probe -------------------------------------------------------------------


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


def refreshed(settings: Settings) -> Settings:
    """The same settings with DSNs read again (the state names the new primary now)."""
    return type(settings)(**{k: v for k, v in settings if k not in DSN_FIELDS})


# -- detection -------------------------------------------------------------------------


async def wait_for_loss(node: Node, pid: int, timeout: float = RECOVERY_TIMEOUT_S) -> str:
    """Poll until the primary is gone: its postmaster PID dead, or its port refusing."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        if not process.alive(pid):
            return "pid"
        polls += 1
        if polls % PORT_CHECK_EVERY == 0:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(node.host, node.port), 0.5)
                writer.close()
            except (OSError, TimeoutError):
                return "port"
        if time.monotonic() > deadline:
            raise ClusterError(f"{node.name} still alive {timeout:.0f} s after SIGKILL")
        await asyncio.sleep(DETECT_POLL_S)


# -- the drill -------------------------------------------------------------------------


@dataclass
class Drill:
    """One drill in progress: what an engine's exercise works with and fills in."""

    settings: Settings
    probe: WriteProbe
    report: dict[str, Any]
    killed_at: float | None = None  # monotonic; set by the exercise when it kills

    async def check_and_rejoin(self, rejoin: Callable[[], Awaitable[RejoinReport]]) -> None:
        """Once promoted: the application writes again; health and test-card on the new
        topology; the old primary rejoins; writes go on being acknowledged (sync too)."""
        await self.probe.more(1)
        await check_after_failover(self.settings, self.report)
        self.report["rejoin"] = (await rejoin()).to_dict()
        self.report["rejoined"] = True
        await self.probe.more(10)


Exercise = Callable[[Drill], Awaitable[None]]


async def run_drill(settings: Settings, *, provider: str, old_primary: str,
                    sync: bool | None, home: Path, exercise: Exercise) -> dict[str, Any]:
    """The frame every engine's drill shares: the probe table and the write probe, the
    engine's `exercise` (kill, detect, promote, check, rejoin) with the probe writing
    throughout, then the tally, the verdict and the report (Markdown and `drills`)."""
    started_at = datetime.now(UTC)
    run = uuid.uuid4().hex[:12]
    await prepare_probe_table(settings)
    report: dict[str, Any] = {
        "ok": False, "provider": provider, "detection_s": None, "promotion_s": None,
        "write_outage_s": None, "acknowledged_writes": 0, "lost_writes": None,
        "old_primary": old_primary, "new_primary": None, "health": None, "rejoined": False,
        "sync": sync, "run": run, "started_at": started_at, "error": None,
    }
    # pool_min 0: asyncpg would log a traceback each time it fails to refill the floor
    db = Database(settings.model_copy(update={"pool_min": 0, "pool_max": 2}))
    await db.open()
    try:
        drill = Drill(settings, WriteProbe(db, run), report)
        task = asyncio.create_task(drill.probe.loop())
        try:
            await drill.probe.more(WARMUP_WRITES)
            await exercise(drill)
        except CardmintError as exc:
            report["error"] = str(exc)
        finally:
            drill.probe.stop()
            await asyncio.gather(task, return_exceptions=True)
        if drill.killed_at is not None and report["new_primary"] is not None:
            await _tally(db, drill.probe, drill.killed_at, report)
            report["health_after_rejoin"] = (await check_health(refreshed(settings))).status
        report["ok"] = bool(
            report["error"] is None and report.get("in_recovery_after") is False
            and report["lost_writes"] == 0 and report["health"] != "critical"
            and report.get("test_card") and report["rejoined"])
        report["finished_at"] = datetime.now(UTC)
        report["markdown"] = str(write_markdown(home, report))
        try:
            report["id"] = await store_report(db, report)
            await db.execute("DELETE FROM drill.probe WHERE run = $1", run)
        except CardmintError as exc:  # the Markdown report is there all the same
            report["id"] = None
            report["error"] = report["error"] or f"report not stored: {exc}"
    finally:
        await db.close()
    return report


async def failover_drill(settings: Settings, *, force: bool = False,
                         now: datetime | None = None) -> dict[str, Any]:
    """The drill on the local or the Patroni engine (the design's JSON contract, and more).
    Fly's is ops.drill_fly."""
    require_window("the failover drill", force=force, now=now)
    cluster: Any = LocalCluster(settings)
    state = cluster.state()
    if state is None or state.status != READY:
        raise ClusterError(f"no ready cluster in {cluster.home}: run `cardmint cluster up`")
    exercise: Callable[..., Awaitable[None]] = _exercise
    if state.provider == "patroni":  # a lost host, and Patroni's own failover
        from cardmint.ops.drills import patroni

        cluster, state = await patroni.prepare(settings)
        exercise = patroni.exercise
    status = await cluster.status()
    streaming = [n["name"] for n in status["nodes"]
                 if n["role"] == "replica" and n["state"] == "streaming"]
    if not streaming:
        raise ClusterError("no replica is streaming: a drill now would be a real outage")
    old = state.primary
    pid = process.postmaster_pid(Path(old.datadir))
    if pid is None:
        raise ClusterError(f"the primary {old.name} is not running")
    return await run_drill(settings, provider=cluster.provider, old_primary=old.name,
                           sync=state.sync, home=cluster.home,
                           exercise=functools.partial(exercise, cluster, state, pid))


async def _exercise(cluster: LocalCluster, state: ClusterState, pid: int, d: Drill) -> None:
    """SIGKILL the primary's postmaster, detect, promote the best replica, check, rejoin."""
    old = state.primary
    conns: dict[str, asyncpg.Connection] = {}
    try:
        for node in state.replicas:  # opened now, so promotion pays no connect time
            conns[node.name] = await cluster._admin_connect(node, "postgres", timeout=3)

        d.killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        d.report["detected_by"] = await wait_for_loss(old, pid)
        detected_at = time.monotonic()
        d.report["detection_s"] = round(detected_at - d.killed_at, 4)

        failover = await cluster.failover(conns=conns)
        d.report["promotion_s"] = round(time.monotonic() - detected_at, 4)
        d.report["new_primary"] = failover.new_primary
        d.report["timeline"] = failover.timeline
        d.report["failover"] = failover.to_dict()
        d.report["in_recovery_after"] = await conns[failover.new_primary].fetchval(
            "SELECT pg_is_in_recovery()")
        await d.check_and_rejoin(lambda: cluster.rejoin(old.name))
    finally:
        for conn in conns.values():
            await conn.close()


async def check_after_failover(settings: Settings, report: dict[str, Any]) -> None:
    """Health and test-card against the new topology, into `report`."""
    fresh = refreshed(settings)
    health = await check_health(fresh)
    report["health"] = health.status
    report["health_findings"] = [f"{c['name']} {c['node'] or ''} {c['status']}: "
                                 f"{c['detail']}" for c in health.to_dict()["checks"]
                                 if c["status"] != "ok"]
    card = await run_test_card(fresh)
    report["test_card"] = card.ok
    report["test_card_failures"] = [f"{st.name}: {st.detail}" for st in card.steps
                                    if not st.ok]


async def _tally(db: Database, probe: WriteProbe, killed_at: float,
                 report: dict[str, Any]) -> None:
    """Every acknowledged id must be on the new primary; the outage from the acks."""
    rows = await db.fetch("SELECT id, timeline FROM drill.probe WHERE run = $1", report["run"])
    timelines = {r["id"]: r["timeline"] for r in rows}
    if report.get("timeline") is None:  # Fly's machine list names no timeline
        report["timeline"] = max(timelines.values(), default=None)
    missing = lost(probe.acks, set(timelines))
    report.update(outage(probe.acks, timelines, killed_at, report["timeline"]))
    report["acknowledged_writes"] = len(probe.acks)
    report["lost_writes"] = len(missing)
    report["lost_ids"] = missing[:20]
    report["probe"] = {"attempts": probe.attempts, "interval_ms": probe.interval_s * 1000,
                       "failures": dict(probe.failures)}
    report["outage_budget_s"] = budget(report)


def budget(report: dict[str, Any]) -> dict[str, float] | None:
    """Where the time from the kill to the first write on the new primary went: detection,
    the failover's steps up to promotion, and the rest, the application's reconnection."""
    steps = (report.get("failover") or {}).get("timings_s") or {}
    total, detection = report.get("kill_to_first_write_s"), report.get("detection_s")
    if total is None or detection is None:
        return None
    out = {"detection": detection}
    out |= {k: steps[k] for k in ("fence", "choose", "promote") if k in steps}
    out["application"] = round(total - sum(out.values()), 4)
    return out


async def prepare_probe_table(settings: Settings) -> None:
    dsn = secret(settings.migration_url)
    if not dsn:
        raise ClusterError("no owner DSN (migration_url) to create the probe table with")
    async with connection(dsn, settings, application="cardmint-drill") as conn:
        for statement in PROBE_DDL:
            await conn.execute(statement)


async def store_report(db: Database, report: dict[str, Any]) -> int:
    async with db.transaction() as tx:
        return await tx.fetchval(
            "INSERT INTO drills (kind, started_at, finished_at, ok, report) "
            "VALUES ('failover', $1, $2, $3, $4) RETURNING id",
            report["started_at"], report["finished_at"], report["ok"], plain(report))


def plain(value: Any) -> Any:
    """JSON-safe (datetimes as ISO 8601), as jsonb stores it."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat()
                                 if isinstance(v, datetime) else str(v)))


def render_markdown(report: dict[str, Any]) -> str:
    """The drill as the runbook asks to document it."""
    def fmt(value: Any) -> str:
        return "—" if value is None else (f"{value:.3f} s" if isinstance(value, float)
                                          else str(value))

    lines = [
        f"# Failover drill {report['started_at']:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"**Result: {'PASS' if report['ok'] else 'FAIL'}** — provider {report['provider']}, "
        f"{'synchronous' if report.get('sync') else 'asynchronous'} replication.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Old primary (SIGKILL) | {report['old_primary']} |",
        f"| New primary | {report['new_primary']} (timeline {report.get('timeline')}) |",
        f"| Detection | {fmt(report['detection_s'])} (by {report.get('detected_by')}) |",
        f"| Promotion | {fmt(report['promotion_s'])} |",
        f"| Application write outage | {fmt(report['write_outage_s'])} |",
        f"| Kill to first write | {fmt(report.get('kill_to_first_write_s'))} |",
        f"| Acknowledged writes | {report['acknowledged_writes']} |",
        f"| Acknowledged writes lost | {report['lost_writes']} |",
        f"| pg_is_in_recovery() on the new primary | {report.get('in_recovery_after')} |",
        f"| Health after failover | {report['health']} |",
        f"| Test card | {'ok' if report.get('test_card') else 'FAILED'} |",
        f"| Old primary rejoined | {report['rejoined']} "
        f"({(report.get('rejoin') or {}).get('method', '—')}) |",
        f"| Health after rejoin | {report.get('health_after_rejoin')} |",
        "",
        "## Where the time went",
        "",
    ]
    lines.append("From the kill to the first acknowledged write on the new primary:")
    lines.append("")
    for step, seconds in (report.get("outage_budget_s") or {}).items():
        lines.append(f"- {step}: {seconds * 1000:.1f} ms")
    after = {k: v for k, v in ((report.get("failover") or {}).get("timings_s") or {}).items()
             if k not in (report.get("outage_budget_s") or {})}
    if after:
        lines += ["", "After promotion (off the write path): " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in after.items())]
    failures = (report.get("probe") or {}).get("failures")
    if failures:
        lines += ["", f"Probe writes refused during the outage: {failures}"]
    return "\n".join(lines) + "\n"


def write_markdown(home: Path, report: dict[str, Any]) -> Path:
    folder = home / "drills"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"failover-{report['started_at']:%Y%m%dT%H%M%SZ}-{report['run']}.md"
    path.write_text(render_markdown(report))
    return path
