"""The local cluster: status contract, streaming, idempotent up, recovery from a killed
or half-finished `up`, and a `down` that leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.pg import process
from cardmint.cluster.state import CREATING, load, save
from cardmint.errors import UsageError
from support import TestCluster, poll, postgres_pids, start_cluster


async def test_status_shows_one_primary_and_one_streaming_replica(pg: TestCluster) -> None:
    report = (await pg.cluster.status()).to_dict()
    assert report["provider"] == "local"
    roles = sorted(n["role"] for n in report["nodes"])
    assert roles == ["primary", "replica"]
    for node in report["nodes"]:
        assert set(node) >= {"name", "role", "host", "port", "running", "timeline", "lsn",
                             "lag_bytes", "lag_s"}
        assert node["running"] is True
        assert node["host"] == "127.0.0.1"
        assert node["timeline"] == 1
    replica = next(n for n in report["nodes"] if n["role"] == "replica")
    assert replica["state"] == "streaming"
    assert replica["lag_bytes"] >= 0 and replica["lag_s"] >= 0
    json.dumps(report)  # the contract is JSON


async def test_row_written_on_primary_is_visible_on_replica(pg: TestCluster) -> None:
    primary = await pg.admin("primary")
    replica = await pg.admin("replica")
    try:
        assert await replica.fetchval("SELECT pg_is_in_recovery()") is True
        await primary.execute("CREATE TABLE IF NOT EXISTS replication_probe (v text)")
        token = os.urandom(8).hex()
        await primary.execute("INSERT INTO replication_probe VALUES ($1)", token)

        async def seen():
            try:
                return await replica.fetchval(
                    "SELECT count(*) FROM replication_probe WHERE v = $1", token)
            except asyncpg.UndefinedTableError:
                return 0

        assert await poll(seen) == 1
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await replica.execute("INSERT INTO replication_probe VALUES ('no')")
    finally:
        await primary.execute("DROP TABLE IF EXISTS replication_probe")
        await primary.close()
        await replica.close()


async def test_primary_has_the_runbook_settings(pg: TestCluster) -> None:
    conn = await pg.admin("primary")
    try:
        settings = {r["name"]: r["setting"] for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
            ["wal_level", "archive_mode", "wal_log_hints", "data_checksums",
             "shared_preload_libraries", "listen_addresses", "password_encryption"])}
        assert settings == {
            "wal_level": "replica", "archive_mode": "on", "wal_log_hints": "on",
            "data_checksums": "on", "shared_preload_libraries": "pg_stat_statements",
            "listen_addresses": "127.0.0.1", "password_encryption": "scram-sha-256"}
        slots = await conn.fetch("SELECT slot_name, active FROM pg_replication_slots")
        assert [(s["slot_name"], s["active"]) for s in slots] == [("node2", True)]
        # WAL reaches the archive
        await conn.execute("SELECT pg_switch_wal()")
        archived = await poll(lambda: conn.fetchval(
            "SELECT archived_count FROM pg_stat_archiver WHERE archived_count > 0"))
        assert archived >= 1
        assert any((pg.home / "backups" / "archive").iterdir())
    finally:
        await conn.close()
    replica = await pg.admin("replica")
    try:
        assert await replica.fetchval("SHOW wal_retrieve_retry_interval") == "500ms"
        assert "application_name=node2" in await replica.fetchval("SHOW primary_conninfo")
    finally:
        await replica.close()


async def test_no_password_is_left_in_state_logs_or_statistics(pg: TestCluster) -> None:
    passwords = [p for p in pg.cluster.passwords().values() if p]
    assert len(passwords) == 6
    exposed = [pg.home / "cluster.json", *sorted((pg.home / "logs").iterdir())]
    for path in exposed:
        text = path.read_text(errors="replace")
        assert not any(p in text for p in passwords), path
    assert (pg.home / "secrets.env").stat().st_mode & 0o777 == 0o600
    conn = await pg.admin("primary")
    try:
        texts = await conn.fetch("SELECT query FROM pg_stat_statements")
        assert not any(p in row["query"] for row in texts for p in passwords)
    finally:
        await conn.close()


async def test_roles_have_least_privilege(pg: TestCluster, db) -> None:
    from cardmint.errors import DatabaseError

    with pytest.raises(DatabaseError, match="permission denied"):
        await db.execute("CREATE TABLE app_may_not (x int)")
    roles = {r["rolname"]: r for r in await db.fetch(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication "
        "FROM pg_roles WHERE rolname LIKE 'cardmint%'")}
    assert set(roles) == {"cardmint_owner", "cardmint_app", "cardmint_ro", "cardmint_replicator",
                          "cardmint_monitor"}
    assert not any(r["rolsuper"] or r["rolcreaterole"] or r["rolcreatedb"] for r in roles.values())
    assert [n for n, r in roles.items() if r["rolreplication"]] == ["cardmint_replicator"]


@pytest.mark.slow
async def test_lifecycle_adopt_restart_clean_and_down(work_root: Path, template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "lifecycle")
    cluster = tc.cluster
    try:
        first = cluster.state()
        pids = {n.name: n.pid for n in first.nodes}

        # a second `up` adopts: same processes, nothing started
        again = await cluster.up()
        assert again.adopted and not again.created and again.started == []
        assert {n.name: n.pid for n in cluster.state().nodes} == pids
        with pytest.raises(UsageError):
            await cluster.up(replicas=2)

        # a replica killed hard is started again by `up`; its stale postmaster.pid is handled
        replica = cluster.state().replicas[0]
        os.kill(replica.pid, signal.SIGKILL)
        await poll(lambda: not process.alive(replica.pid))
        await poll(lambda: not postgres_pids(Path(replica.datadir)))
        assert (Path(replica.datadir) / "postmaster.pid").exists()
        restarted = await cluster.up()
        assert restarted.started == [replica.name]
        status = (await cluster.status()).to_dict()
        assert all(n["running"] for n in status["nodes"])

        # down stops everything by PID
        down = await cluster.down()
        assert sorted(s.node for s in down.stopped) == ["node1", "node2"]
        assert postgres_pids(tc.home) == set()
        assert (await cluster.down()).stopped == []  # idempotent

        # up after down starts the same cluster
        back = await cluster.up()
        assert back.adopted and sorted(back.started) == ["node1", "node2"]

        # a half-created cluster (state left at "creating") is cleaned and made anew
        state = cluster.state()
        state.status = CREATING
        save(state)
        remade = await cluster.up()
        assert remade.created and remade.cleaned
        assert load(tc.home).status == "ready"
        status = (await cluster.status()).to_dict()
        assert sorted(n["role"] for n in status["nodes"]) == ["primary", "replica"]
    finally:
        report = await cluster.down(purge=True)
    assert report.purged
    assert postgres_pids(tc.home) == set()
    assert not (tc.home / "nodes").exists()



@pytest.mark.slow
async def test_sync_cluster_with_two_replicas(work_root: Path, template_dir: Path) -> None:
    from cardmint.cluster.local.engine import LocalCluster
    from cardmint.config import Settings
    from support import TestCluster, make_settings

    home = work_root / "sync"
    cluster = LocalCluster(make_settings(home), template=template_dir)
    try:
        await cluster.up(replicas=2, sync=True)
        tc = TestCluster(cluster, home)
        conn = await tc.admin("primary")
        try:
            assert await conn.fetchval("SHOW synchronous_standby_names") == \
                "FIRST 1 (node2, node3)"
            rows = await conn.fetch(
                "SELECT application_name, sync_state FROM pg_stat_replication "
                "ORDER BY application_name")
            assert [(r["application_name"], r["sync_state"]) for r in rows] == [
                ("node2", "sync"), ("node3", "potential")]
            await conn.execute("CREATE TABLE sync_probe (x int)")
            await conn.execute("INSERT INTO sync_probe VALUES (1)")  # a commit that returns
        finally:
            await conn.close()
        status = (await cluster.status()).to_dict()
        assert status["sync"] is True
        assert sorted(n["role"] for n in status["nodes"]) == ["primary", "replica", "replica"]
        with pytest.raises(UsageError):
            await cluster.up(sync=False)
        assert isinstance(tc.settings(), Settings)
        assert len(tc.settings().replica_urls) == 2
    finally:
        await cluster.down(purge=True)
    assert postgres_pids(home) == set()
