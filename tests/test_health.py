"""`cardmint health` against a real cluster: every check driven to warn and critical by a
real condition (or by thresholds set around a real reading)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.state import APP
from cardmint.db import Database
from cardmint.ops.health.report import HealthReport, check_health
from support import TestCluster, poll, replay_paused, start_cluster

ROOT = Path(__file__).resolve().parent.parent
BIG_DISK = 10**13  # the machine's own disk may stand near 70 %: measure against this
CONTRACT = {"connectivity", "role", "replica_lag", "pool_utilization", "latency_p95",
            "storage", "connections", "wal_archiving", "backup_age"}


def status(report: HealthReport, name: str, node: str | None = None) -> str:
    return report.check(name, node).status


@pytest.fixture
async def fresh_backup(db: Database):
    await db.execute("INSERT INTO backups (id, status, started_at, finished_at) "
                     "VALUES ('health-test', 'ok', now() - interval '1 hour', now())")
    yield
    await db.execute("DELETE FROM backups WHERE id LIKE 'health-test%'")


async def test_a_healthy_cluster_is_ok_everywhere(pg: TestCluster, fresh_backup) -> None:
    report = await check_health(pg.settings(storage_capacity_bytes=BIG_DISK))
    assert {c.name for c in report.checks} >= CONTRACT
    bad = [(c.name, c.node, c.status, c.detail) for c in report.checks if c.status != "ok"]
    assert bad == []
    assert report.status == "ok" and report.severity is None and report.exit_code == 0
    doc = report.to_dict()
    assert set(doc) == {"status", "severity", "checked_at", "checks"}
    assert set(doc["checks"][0]) == {"name", "status", "value", "unit", "warn", "critical",
                                     "node", "detail"}
    json.dumps(doc)
    assert status(report, "replica_lag", "node2") == "ok"
    assert report.check("connectivity", "node1").value > 0


@pytest.mark.parametrize("warn, critical, expected", [
    (0.000001, 10_000, "warn"), (0.000001, 0.000002, "critical")])
async def test_latency_thresholds(pg: TestCluster, warn: float, critical: float,
                                  expected: str) -> None:
    report = await check_health(pg.settings(latency_p95_warn_ms=warn,
                                            latency_p95_critical_ms=critical))
    assert status(report, "latency_p95") == expected
    assert status(report, "connectivity", "node1") == expected
    assert report.severity == ("P2" if expected == "warn" else "P1")
    assert report.exit_code == (1 if expected == "warn" else 2)


async def test_storage_against_a_capacity(pg: TestCluster) -> None:
    first = await check_health(pg.settings(storage_capacity_bytes=BIG_DISK))
    used = first.figures["storage"]["database_bytes"] + first.figures["storage"]["wal_bytes"]
    warn = await check_health(pg.settings(storage_capacity_bytes=int(used / 0.78)))
    assert status(warn, "storage") == "warn"
    critical = await check_health(pg.settings(storage_capacity_bytes=int(used / 0.97)))
    assert status(critical, "storage") == "critical"


async def test_backup_age(pg: TestCluster, db: Database) -> None:
    s = pg.settings(storage_capacity_bytes=BIG_DISK)
    none = await check_health(s)
    assert status(none, "backup_age") == "warn" and "no successful backup" in \
        none.check("backup_age").detail
    try:
        await db.execute("INSERT INTO backups (id, status, started_at, finished_at) VALUES "
                         "('health-test-old', 'ok', now() - interval '31 hours', "
                         "now() - interval '30 hours')")
        assert status(await check_health(s), "backup_age") == "warn"
        await db.execute("UPDATE backups SET started_at = now() - interval '61 hours', "
                         "finished_at = now() - interval '60 hours' "
                         "WHERE id = 'health-test-old'")
        assert status(await check_health(s), "backup_age") == "critical"
    finally:
        await db.execute("DELETE FROM backups WHERE id LIKE 'health-test%'")


async def test_long_and_idle_transactions(pg: TestCluster) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=pg.cluster.state().primary.port,
                                 user=APP, password=pg.password(APP), database="cardmint")
    try:
        await conn.execute("BEGIN")
        await conn.fetchval("SELECT txid_current()")
        warn_settings = pg.settings(long_transaction_warn_s=0.05,
                                    idle_in_transaction_warn_s=0.05)

        async def warned() -> bool:
            r = await check_health(warn_settings)
            return status(r, "long_transactions") == "warn" and \
                status(r, "idle_in_transaction") == "warn"

        await poll(warned)
        critical = await check_health(pg.settings(
            long_transaction_warn_s=0.01, long_transaction_critical_s=0.02,
            idle_in_transaction_warn_s=0.01, idle_in_transaction_critical_s=0.02))
        assert status(critical, "long_transactions") == "critical"
        assert status(critical, "idle_in_transaction") == "critical"
        assert "idle in transaction" in critical.check("idle_in_transaction").detail
    finally:
        await conn.close()
    after = await check_health(pg.settings(long_transaction_warn_s=0.05,
                                           idle_in_transaction_warn_s=0.05))
    assert status(after, "idle_in_transaction") == "ok"


@pytest.mark.parametrize("held, expected", [(17, "warn"), (19, "critical")])
async def test_pool_utilization(pg: TestCluster, held: int, expected: str) -> None:
    db = Database(pg.settings(pool_min=1))
    await db.open(monitor=False)
    release = asyncio.Event()
    started = asyncio.Semaphore(0)

    async def hold() -> None:
        async with db.transaction() as tx:
            await tx.fetchval("SELECT 1")
            started.release()
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(held)]
    try:
        for _ in range(held):
            await started.acquire()
        report = await check_health(pg.settings())
        check = report.check("pool_utilization")
        assert check.status == expected, check.detail
        assert check.value >= 100.0 * held / 20
    finally:
        release.set()
        await asyncio.gather(*tasks)
        await db.close()


async def test_connections(pg: TestCluster) -> None:
    warn = await check_health(pg.settings(pgbouncer_connections=0))
    assert status(warn, "connections") == "warn"
    port = pg.cluster.state().primary.port
    admin = await pg.admin()
    try:
        current = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        most = await admin.fetchval("SELECT current_setting('max_connections')::int")
    finally:
        await admin.close()
    extra = int(0.95 * most) - current + 2  # just over the critical line, under the limit
    conns = await asyncio.gather(*(asyncpg.connect(
        host="127.0.0.1", port=port, user=APP, password=pg.password(APP),
        database="cardmint") for _ in range(extra)))
    try:
        report = await check_health(pg.settings(storage_capacity_bytes=BIG_DISK))
        assert status(report, "connections") == "critical"
        assert report.check("connections").value > 0.95 * most
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_replica_lag(pg: TestCluster) -> None:
    async def lag_status(warn: float, critical: float) -> str:
        r = await check_health(pg.settings(replica_lag_warn_s=warn,
                                           replica_lag_critical_s=critical))
        return status(r, "replica_lag", "node2")

    async with replay_paused(pg):
        await poll(lambda: _eq(lag_status(0.01, 10_000), "warn"))
        await poll(lambda: _eq(lag_status(0.01, 0.02), "critical"))
    await poll(lambda: _eq(lag_status(10, 30), "ok"))


async def _eq(coro, expected) -> bool:
    return await coro == expected


@pytest.mark.slow
async def test_archive_failures_and_lost_nodes(work_root: Path, template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "health-faults")
    s = tc.settings(storage_capacity_bytes=BIG_DISK, archive_backlog_warn_s=0.001)
    try:
        admin = await tc.admin()
        try:
            # archiving that works but lags: a backlog older than the threshold is a warning
            # (the archiver waits while `hold` exists, however slow the health check is)
            hold = tc.home / "archive-hold"
            hold.touch()
            real = await admin.fetchval("SHOW archive_command")
            waiting = f"while [ -e {hold} ]; do sleep 0.05; done; {real}"
            await admin.execute("ALTER SYSTEM SET archive_command = "
                                f"'{waiting.replace(chr(39), chr(39) * 2)}'")
            await admin.execute("SELECT pg_reload_conf()")
            await admin.execute("CREATE TABLE wal_probe AS SELECT generate_series(1, 1000) x")
            await admin.execute("SELECT pg_switch_wal()")
            await poll(lambda: _eq(_status(s, "wal_archiving"), "warn"), timeout=30)
            hold.unlink()

            # a failing archive_command with segments waiting: critical, P0 (PITR at risk)
            await admin.execute("ALTER SYSTEM SET archive_command = '/bin/false'")
            await admin.execute("SELECT pg_reload_conf()")
            await admin.execute("INSERT INTO wal_probe SELECT generate_series(1, 1000)")
            await admin.execute("SELECT pg_switch_wal()")
            await poll(lambda: _eq(_status(s, "wal_archiving"), "critical"), timeout=30)
            report = await check_health(s)
            assert report.severity == "P0" and "failing" in report.check("wal_archiving").detail

            # mended: the backlog drains and the check is ok again
            await admin.execute("ALTER SYSTEM RESET archive_command")
            await admin.execute("SELECT pg_reload_conf()")
            await poll(lambda: _eq(_status(s, "wal_archiving"), "ok"), timeout=30)
        finally:
            await admin.close()

        # a replica down: HA is degraded (P1, so critical as everywhere); the primary
        # still serves
        state = tc.cluster.state()
        from cardmint.cluster.pg import process
        await process.stop(state.replicas[0].pid)
        report = await check_health(s)
        assert status(report, "connectivity", "node2") == "critical"
        assert status(report, "connectivity", "node1") == "ok"
        assert report.severity == "P1"

        # the primary down too: an outage (critical, P0), exit 2
        await process.stop(state.primary.pid)
        report = await check_health(s)
        assert status(report, "role") == "critical"
        assert report.status == "critical" and report.severity == "P0"
        assert report.exit_code == 2
    finally:
        await tc.cluster.down(purge=True)


async def _status(settings, name: str) -> str:
    return status(await check_health(settings), name)


def test_cli_and_production_cli_agree(pg: TestCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(pg.home), CARDMINT_STORAGE_CAPACITY_BYTES=str(BIG_DISK))
    outputs = []
    for argv in ([sys.executable, "-m", "cardmint", "health", "--json"],
                 [sys.executable, str(ROOT / "production_cli.py"), "health", "--json"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode in (0, 1), done.stderr
        outputs.append(json.loads(done.stdout))
        outputs[-1]["returncode"] = done.returncode

    def verdicts(doc: dict) -> list:
        return [(c["name"], c["node"], c["status"]) for c in doc["checks"]]

    assert verdicts(outputs[0]) == verdicts(outputs[1])
    assert outputs[0]["returncode"] == outputs[1]["returncode"]


async def test_a_freeze_shows_in_health(pg: TestCluster) -> None:
    from cardmint.ops import freeze

    s = pg.settings(storage_capacity_bytes=BIG_DISK)
    await freeze.freeze(s, reason="health test", by="pytest")
    try:
        report = await check_health(s)
        writes = report.check("writes")
        assert writes.status == "critical" and "health test" in writes.detail
        assert report.severity in ("P0", "P1")
    finally:
        await freeze.thaw(s)
    assert status(await check_health(s), "writes") == "ok"
