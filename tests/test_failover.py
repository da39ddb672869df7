"""Failover, switchover, rejoin and the sync guard on a real synchronous cluster (a primary
and two replicas), under a running write load through the application's data layer.
Primaries die by SIGKILL of their postmaster's PID."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import Request

from cardmint.api.app import create_app
from cardmint.cluster.local.syncrep import sync_names
from cardmint.cluster.pg import process
from cardmint.cluster.state import FENCED
from cardmint.config import secret
from cardmint.db import Database
from cardmint.errors import UsageError
from cardmint.ops.drills.probe import WriteProbe, lost
from cardmint.ops.syncguard import ALERT, Round, SyncGuard
from support import TestCluster, migrated_cluster, poll, serving

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def ha_cluster(work_root: Path, template_dir: Path) -> AsyncIterator[TestCluster]:
    async with migrated_cluster(work_root, template_dir, "ha", replicas=2, sync=True,
                                probe=True) as tc:
        yield tc


@pytest.fixture
async def ha(ha_cluster: TestCluster) -> TestCluster:
    """The cluster whole again, whichever node is primary: fenced nodes rejoined, stopped
    ones started (a test that failed half way must not break the next)."""
    state = ha_cluster.cluster.state()
    for node in state.nodes:
        if node.role == FENCED:
            await ha_cluster.cluster.rejoin(node.name)
    await ha_cluster.cluster.up()
    return ha_cluster


@asynccontextmanager
async def write_load(tc: TestCluster) -> AsyncIterator[tuple[WriteProbe, Database]]:
    """The drill's write probe through the application's Database, running throughout."""
    db = Database(tc.settings(pool_min=0, pool_max=4))
    await db.open(monitor=False)
    probe = WriteProbe(db, uuid.uuid4().hex[:12])
    task = asyncio.create_task(probe.loop())
    try:
        await probe.until(lambda: len(probe.acks) >= 30)
        yield probe, db
    finally:
        probe.stop()
        await task
        await db.close()


async def kill_primary(tc: TestCluster) -> str:
    old = tc.cluster.state().primary
    pid = process.postmaster_pid(Path(old.datadir))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await poll(lambda: not process.alive(pid))
    return old.name


async def rows(tc: TestCluster, node: str, run: str) -> set[int]:
    conn = await tc.admin(node)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM drill.probe WHERE run = $1",
                                                  run)}
    finally:
        await conn.close()


async def streaming_from(tc: TestCluster, primary: str) -> dict[str, str]:
    conn = await tc.admin(primary, database="postgres")
    try:
        return {r["application_name"]: r["sync_state"] for r in await conn.fetch(
            "SELECT application_name, sync_state FROM pg_stat_replication "
            "WHERE state = 'streaming'")}
    finally:
        await conn.close()


async def test_failover_under_sync_write_load_loses_no_acknowledged_write(
        ha: TestCluster) -> None:
    cluster = ha.cluster
    async with write_load(ha) as (probe, _):
        old = await kill_primary(ha)
        report = await cluster.failover()
        count = len(probe.acks)
        await probe.until(lambda: len(probe.acks) >= count + 30)  # the same pool writes on
    new = report.new_primary
    assert report.old_primary == old and not report.old_primary_was_running and report.fenced
    assert report.timeline >= 2
    assert lost(probe.acks, await rows(ha, new, probe.run)) == []

    # fenced: out of every DSN, a standby.signal in its directory, not started by `up`
    state = cluster.state()
    fenced = state.node(old)
    assert fenced.role == FENCED and (Path(fenced.datadir) / "standby.signal").exists()
    assert f":{fenced.port}" not in state.dsns()["app"]
    assert f"@127.0.0.1:{state.primary.port}," in state.dsns()["app"]
    assert old not in (await cluster.up()).started
    assert process.postmaster_pid(Path(fenced.datadir)) is None
    status = {n["name"]: n for n in (await cluster.status()).to_dict()["nodes"]}
    assert status[old]["role"] == "replica" and "fenced" in status[old]["state"]

    # the other replica follows the new primary, synchronously
    other = next(n.name for n in state.replicas)
    assert report.repointed == [other] and report.not_streaming == []
    assert await streaming_from(ha, new) == {other: "sync"}
    assert report.sync_names == f"FIRST 1 ({other})"

    # the old primary rejoins by pg_rewind and streams from the new one with the same rows
    back = await cluster.rejoin(old)
    assert back.method == "rewind" and back.fallback_reason is None
    assert set(await streaming_from(ha, new)) == {old, other}
    expected = await rows(ha, new, probe.run)
    assert await poll(lambda: _same(ha, old, probe.run, expected))
    replica = await ha.admin(old)
    try:
        assert await replica.fetchval("SELECT pg_is_in_recovery()") is True
    finally:
        await replica.close()
    # repointing reloads primary_conninfo, which the server logs: it names a password file
    passwords = [p for p in cluster.passwords().values() if p]
    for log in (ha.home / "logs").iterdir():
        assert not any(p in log.read_text(errors="replace") for p in passwords), log


async def _same(tc: TestCluster, node: str, run: str, expected: set[int]) -> bool:
    return await rows(tc, node, run) == expected


async def test_the_api_answers_503_without_a_primary_and_recovers_without_a_restart(
        ha: TestCluster) -> None:
    run = uuid.uuid4().hex[:12]
    app = create_app(ha.settings(replica_check_interval_s=0.1))
    written = iter(range(1, 10_000))

    @app.post("/test/write")
    async def write(request: Request) -> dict[str, int]:
        ident = next(written)
        await request.app.state.db.execute(
            "INSERT INTO drill.probe (run, id, timeline) VALUES ($1, $2, 0)", run, ident)
        return {"id": ident}

    async with app.router.lifespan_context(app):
        await poll(lambda: app.state.db.is_open)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.post("/test/write")).status_code == 200
            old = await kill_primary(ha)
            seen = []
            for _ in range(5):  # no primary: writes 503, reads from a replica or 503
                write_answer = await c.post("/test/write")
                assert write_answer.status_code == 503, write_answer.text
                assert int(write_answer.headers["retry-after"]) > 0
                assert write_answer.json()["status"] == 503
                seen += [(await c.get(path)).status_code
                         for path in ("/v1/sets", "/health/primary", "/health/ready")]
            assert set(seen) <= {200, 503}, seen
            report = await ha.cluster.failover()

            async def recovered() -> bool:
                answer = await c.post("/test/write")
                assert answer.status_code in (200, 503), answer.text
                return answer.status_code == 200

            await poll(recovered, timeout=10)
            assert (await c.get("/health/primary")).status_code == 200
            # the promoted node leaves the replica pool; the replica list follows the state
            db = app.state.db
            await poll(lambda: [r.name for r in db.replicas] == [
                f"127.0.0.1:{n.port}" for n in ha.cluster.state().replicas])
            await ha.cluster.rejoin(old)
            await poll(lambda: len(db.replicas) == 2 and all(r.healthy for r in db.replicas))
            new_port = ha.cluster.state().node(report.new_primary).port
            assert f"127.0.0.1:{new_port}" not in [r.name for r in db.replicas]


async def test_a_rewind_that_is_impossible_falls_back_to_a_base_backup(ha: TestCluster) -> None:
    old = await kill_primary(ha)
    report = await ha.cluster.failover()
    datadir = Path(ha.cluster.state().node(old).datadir)
    (datadir / "global" / "pg_control").unlink()  # pg_rewind cannot read the target
    back = await ha.cluster.rejoin(old)
    assert back.method == "basebackup" and "pg_rewind" in back.fallback_reason
    assert back.set_aside == f"{datadir}.before-rejoin"  # what only it had is kept
    assert old in await streaming_from(ha, report.new_primary)


async def test_a_replica_that_merely_stopped_is_started_again(ha: TestCluster) -> None:
    """Issue 17 item 14: a crashed replica got "pg_rewind was impossible", server log
    lines, a silent base backup and its old directory left behind. A plain start comes
    first now; the command says each step as it goes, in our words."""
    state = ha.cluster.state()
    replica = state.replicas[0]
    os.kill(replica.pid, signal.SIGKILL)  # a crash, not a clean stop
    await process.wait_gone(Path(replica.datadir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(ha.home), COLUMNS="100")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "rejoin", replica.name],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"{replica.name}: starting it again as it is" in done.stderr  # progress
    assert f"{replica.name} streams from {state.primary.name} (started again" in done.stdout
    assert "LOG:" not in done.stdout + done.stderr and "impossible" not in done.stdout
    assert "kept in" not in done.stdout  # nothing set aside: nothing to clean up
    assert replica.name in await streaming_from(ha, state.primary.name)


async def test_switchover_under_write_load_loses_nothing_and_the_old_primary_streams(
        ha: TestCluster) -> None:
    async with write_load(ha) as (probe, _):
        before = ha.cluster.state().primary.name
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "switchover",
                             "--json"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**env, "CARDMINT_HOME": str(ha.home)})
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        count = len(probe.acks)
        await probe.until(lambda: len(probe.acks) >= count + 20)
    assert report["ok"] and report["kind"] == "switchover"
    assert report["old_primary"] == before and report["new_primary"] != before
    assert report["stop_mode"] == "fast" and report["final_lsn"]
    assert report["rejoin"]["method"] == "rewind"
    new = report["new_primary"]
    assert lost(probe.acks, await rows(ha, new, probe.run)) == []
    assert before in await streaming_from(ha, new)
    assert ha.cluster.state().node(before).role == "replica"
    assert not any(p in done.stdout + done.stderr for p in ha.cluster.passwords().values())


async def test_the_sync_guard_degrades_a_stuck_cluster_and_restores_it(ha: TestCluster) -> None:
    guard = SyncGuard(ha.settings(sync_degrade_after_s=0.3))
    strict = SyncGuard(ha.settings(sync_degrade_after_s=0.3), strict=True)
    app = await asyncpg.connect(secret(ha.settings().database_url))
    primary = await ha.admin("primary", database="postgres")
    try:
        await resolve_alerts(ha)
        assert (await guard.round()).action == "none"

        # strict: the commit keeps waiting, and only the alert is raised
        await stop_replicas(ha)
        commit = asyncio.create_task(app.execute(
            "INSERT INTO drill.probe (run, id, timeline) VALUES ('guard', 1, 0)"))
        await poll(lambda: primary.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"))
        alerted = await poll(lambda: _acting(strict, "alert"))
        assert alerted.alert == "raised" and not commit.done()
        assert not await standby_names(primary, "")
        await ha.cluster.up()  # the standbys are back: the commit returns by itself
        await asyncio.wait_for(commit, 30)
        assert (await strict.round()).alert == "resolved"

        # default: past the bound it drops to asynchronous and the waiting commit returns
        await stop_replicas(ha)
        commit = asyncio.create_task(app.execute(
            "INSERT INTO drill.probe (run, id, timeline) VALUES ('guard', 2, 0)"))
        degraded = await poll(lambda: _acting(guard, "degrade"))
        assert degraded.alert == "raised"
        await asyncio.wait_for(commit, 10)
        await poll(lambda: standby_names(primary, ""))
        alert = await primary_alert(ha)
        assert alert["severity"] == "P1" and alert["status"] == "firing"
        assert alert["runbook_section"] and "asynchronous" in alert["message"]

        await ha.cluster.up()
        restored = await poll(lambda: _acting(guard, "restore"))
        assert restored.alert == "resolved"
        await poll(lambda: standby_names(primary, sync_names(ha.cluster.state())))
        assert (await primary_alert(ha))["status"] == "resolved"
        await app.execute("INSERT INTO drill.probe (run, id, timeline) VALUES ('guard', 3, 0)")
    finally:
        await app.close()
        await primary.close()


async def _acting(guard: SyncGuard, action: str) -> Round | None:
    done = await guard.round()
    return done if done.action == action else None


async def stop_replicas(tc: TestCluster) -> None:
    for node in tc.cluster.state().replicas:
        pid = process.postmaster_pid(Path(node.datadir))
        if pid is not None:
            await process.stop(pid)


async def resolve_alerts(tc: TestCluster) -> None:
    conn = await tc.admin("primary")
    try:
        await conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = now() "
                           "WHERE name = $1 AND status = 'firing'", ALERT)
    finally:
        await conn.close()


async def primary_alert(tc: TestCluster) -> dict:
    conn = await tc.admin("primary")
    try:
        return dict(await conn.fetchrow(
            "SELECT * FROM alerts WHERE name = $1 ORDER BY id DESC LIMIT 1", ALERT))
    finally:
        await conn.close()


async def standby_names(conn: asyncpg.Connection, expected: str) -> bool:
    """A reload reaches each backend in its own time: poll the setting."""
    return await conn.fetchval("SHOW synchronous_standby_names") == expected


async def test_a_failover_to_an_unknown_node_is_refused_before_anything_stops(
        ha: TestCluster) -> None:
    primary = ha.cluster.state().primary
    pid = process.postmaster_pid(Path(primary.datadir))
    with pytest.raises(UsageError, match="not a replica"):
        await ha.cluster.failover(to="node9")
    assert process.postmaster_pid(Path(primary.datadir)) == pid
    assert ha.cluster.state().primary.name == primary.name


async def test_serve_runs_the_sync_guard_so_a_lost_standby_stalls_commits_briefly(
        ha: TestCluster) -> None:
    """`cardmint serve` guards a --sync cluster itself: with every standby stopped, a
    commit returns after the bound instead of waiting for ever, and synchronous
    replication comes back with the standbys."""
    from cardmint.api.app import create_app
    from cardmint.api.background import run_sync_guard_in

    settings = ha.settings(sync_degrade_after_s=0.3, sync_guard_interval_s=0.1)
    app_conn = await asyncpg.connect(secret(settings.database_url))
    primary = await ha.admin("primary", database="postgres")
    api = create_app(settings)
    run_sync_guard_in(api)
    try:
        await resolve_alerts(ha)
        async with serving(api):
            await stop_replicas(ha)
            await asyncio.wait_for(app_conn.execute(
                "INSERT INTO drill.probe (run, id, timeline) VALUES ('serve-guard', 1, 0)"), 20)
            assert (await primary_alert(ha))["status"] == "firing"
            await ha.cluster.up()
            await poll(lambda: standby_names(primary, sync_names(ha.cluster.state())),
                       timeout=30)
            assert (await primary_alert(ha))["status"] == "resolved"
    finally:
        await app_conn.close()
        await primary.close()
