"""Point-in-time restore into a new cluster: the PITR story, an LSN target through the
CLI, a backup older than a password rotation, refusals, and `--repoint` (last: it
retires this module's cluster's nodes).

Every restored server is stopped by PID and its directory deleted in `finally`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from cardmint import secretfile
from cardmint.catalog.load import load_catalog
from cardmint.cluster.pg import process, roles
from cardmint.cluster.state import APP, SUPERUSER, load, with_topology
from cardmint.config import Settings, secret
from cardmint.db import Database, migrate
from cardmint.errors import BackupError, UsageError
from cardmint.ops.backups import backup, pitr, store
from support import TestCluster, start_cluster

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
async def rs(work_root: Path, template_dir: Path):
    """A primary and a replica, migrated, with the sample catalog (test-card needs a
    card to write an item for), and a first backup."""
    tc = await start_cluster(work_root, template_dir, "restore", replicas=1)
    try:
        await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))
        owner = await asyncpg.connect(secret(tc.settings().migration_url))
        try:
            await load_catalog(owner, sample=True)
        finally:
            await owner.close()
        yield tc
    finally:
        await tc.cluster.down(purge=True)


async def forget(tc: TestCluster, report: dict | None, directory: Path) -> None:
    """Stop a restored copy by PID and delete it, whatever state it is in."""
    if report is not None:
        pid = process.postmaster_pid(Path(report["restored_dir"]))
        if pid is not None:
            await process.stop(pid)
        shutil.rmtree(tc.home / "restores" / report["node"], ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)


async def test_pitr_story(rs: TestCluster, work_root: Path) -> None:
    made = await backup.create(rs.settings())
    db = Database(rs.settings())
    await db.open(monitor=False)
    try:
        await db.execute("INSERT INTO incidents (title, severity) "
                         "SELECT 'pitr ' || g, 'P1' FROM generate_series(1, 5) g")
        moment = await db.fetchval("SELECT clock_timestamp()")
        await db.execute("DELETE FROM incidents WHERE title LIKE 'pitr %'")  # the mistake
        await db.execute("INSERT INTO incidents (title, severity) VALUES ('after', 'P2')")
        assert await db.fetchval("SELECT count(*) FROM incidents WHERE title LIKE 'pitr %'") == 0
    finally:
        await db.close()

    target = work_root / "pitr"
    report = None
    try:
        report = await pitr.restore(rs.settings(), to=target, target_time=moment)
        assert report["ok"], report["verification"]
        assert report["backup_id"] == made["id"] and report["target"]["kind"] == "time"
        assert report["passwords_adopted"] is False
        assert report["restored_dir"] == str(target) and report["repointed"] is False
        checks = {c["name"]: c["ok"] for c in report["verification"]["checks"]}
        assert checks == {"promoted": True, "not_frozen": True, "schema": True,
                          "health": True, "test_card": True}
        assert report["verification"]["health"]["status"] in ("ok", "warn")

        conn = await rs.restored(report["port"])
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE title LIKE 'pitr %'") == 5
            assert await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE title = 'after'") == 0
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
            assert await conn.fetchval("SHOW archive_mode") == "off"
            assert await conn.fetchval("SHOW primary_conninfo") == ""
            assert await conn.fetchval("SHOW synchronous_standby_names") == ""
        finally:
            await conn.close()
        auto = (target / "postgresql.auto.conf").read_text()
        assert "primary_conninfo" not in auto and "archive_mode = 'off'" in auto
        # the cluster itself is untouched: still its two nodes, the rows still gone
        assert [n.name for n in load(rs.home).nodes] == ["node1", "node2"]
    finally:
        await forget(rs, report, target)


def exists(path: str) -> bool:
    return Path(path).is_dir()


def cardmint(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(home), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                          text=True, env=env, timeout=180, cwd=ROOT)


async def test_restore_to_an_lsn_through_the_cli(rs: TestCluster, work_root: Path) -> None:
    conn = await rs.admin()
    try:
        await conn.execute("INSERT INTO incidents (title, severity) VALUES ('lsn row', 'P0')")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        await conn.execute("DELETE FROM incidents WHERE title = 'lsn row'")
    finally:
        await conn.close()
    target = work_root / "by-lsn"
    report = None
    try:
        done = await asyncio.to_thread(cardmint, rs.home, "backup", "restore", "--target-lsn",
                                       lsn, "--to", str(target), "--json")
        report = json.loads(done.stdout)
        assert done.returncode == 0, done.stderr
        assert {"ok", "target", "restored_dir", "port", "duration_s", "repointed"} <= set(report)
        assert report["target"] == {"kind": "lsn", "value": lsn} and report["ok"]
        conn = await rs.restored(report["port"])
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE title = 'lsn row'") == 1
        finally:
            await conn.close()
        done = await asyncio.to_thread(cardmint, rs.home, "backup", "discard", report["node"],
                                       "--json")
        assert done.returncode == 0, done.stderr
        assert not target.exists() and process.postmaster_pid(target) is None
    finally:
        await forget(rs, report, target)


async def test_restore_refuses_what_it_cannot_do_safely(rs: TestCluster,
                                                        work_root: Path) -> None:
    busy = work_root / "busy"
    busy.mkdir(exist_ok=True)
    (busy / "precious").write_text("keep me")
    with pytest.raises(UsageError, match="not an empty directory"):
        await pitr.restore(rs.settings(), to=busy, latest=True)
    assert (busy / "precious").read_text() == "keep me"
    conn = await rs.admin()
    try:
        now = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    empty = work_root / "never"
    with pytest.raises(UsageError, match="in the future"):
        await pitr.restore(rs.settings(), to=empty, target_time=now + timedelta(hours=1))
    with pytest.raises(BackupError, match="no backup ends before"):
        await pitr.restore(rs.settings(), to=empty, target_time=now - timedelta(days=1))
    with pytest.raises(UsageError, match="one recovery target"):
        await pitr.restore(rs.settings(), to=empty, latest=True, target_lsn="0/1")
    with pytest.raises(UsageError, match="time zone"):
        await pitr.restore(rs.settings(), to=empty, target_time="2026-01-01T00:00:00")
    assert not empty.exists() or not any(empty.iterdir())
    assert not (rs.home / "restores").exists() or not any((rs.home / "restores").iterdir())


async def test_a_backup_older_than_a_password_rotation_restores_with_todays(
        rs: TestCluster, work_root: Path) -> None:
    made = await backup.create(rs.settings())
    # rotate the superuser's and the application's passwords after the backup
    new = {SUPERUSER: roles.new_password(), APP: roles.new_password()}
    conn = await rs.admin()
    try:
        for role, password in new.items():
            await conn.execute(f"ALTER ROLE {role} PASSWORD "
                               f"{roles.literal(roles.scram_verifier(password))}")
    finally:
        await conn.close()
    path = rs.settings().secrets_path
    secretfile.write(path, {**secretfile.read(path),
                            **{secretfile.role_key(r): p for r, p in new.items()}})
    target = work_root / "rotated"
    report = None
    try:
        report = await pitr.restore(rs.settings(), to=target, backup_id=made["id"])
        assert report["ok"], report["verification"]
        assert report["target"] == {"kind": "immediate", "value": None}
        assert report["passwords_adopted"] is True
        conn = await rs.restored(report["port"])  # today's superuser password works
        await conn.close()
    finally:
        await forget(rs, report, target)


async def test_repoint_makes_the_restored_copy_the_primary(rs: TestCluster,
                                                          work_root: Path) -> None:
    old = load(rs.home)
    old_backups = set(store.finished(store.site(rs.settings())))
    conn = await rs.admin()
    try:
        await conn.execute("INSERT INTO incidents (title, severity) VALUES ('last', 'P2')")
    finally:
        await conn.close()
    target = work_root / "repointed"
    try:
        report = await pitr.restore(rs.settings(), to=target, latest=True, repoint=True)
        assert report["ok"] and report["repointed"], report
        switch = report["repoint"]
        assert switch["primary"] == report["node"] and switch["warnings"] == []
        assert sorted(s["node"] for s in switch["stopped"]) == ["node1", "node2"]
        for node in old.nodes:
            assert process.postmaster_pid(Path(node.datadir)) is None
        state = load(rs.home)
        assert [(n.name, n.role, n.port) for n in state.nodes] == [
            (report["node"], "primary", report["port"])]
        retired = json.loads((rs.home / "retired.json").read_text())
        assert {r["name"] for r in retired} == {"node1", "node2"}
        assert all(exists(r["datadir"]) for r in retired)  # kept for the post-mortem

        # the application's next settings load finds the new primary, and may write
        fresh = with_topology(Settings(_env_file=None, home=rs.home))  # type: ignore[call-arg]
        assert f":{report['port']}/" in secret(fresh.database_url)
        db = Database(fresh)
        await db.open(monitor=False)
        try:
            assert await db.fetchval("SELECT count(*) FROM incidents WHERE title = 'last'") == 1
            await db.execute("INSERT INTO incidents (title, severity) VALUES ('new', 'P2')")
        finally:
            await db.close()

        # it archives into the shared archive again, from its new timeline's start
        timeline = switch["timeline"]
        assert timeline >= 2 and store.archived(store.site(rs.settings()),
                                                f"{timeline:08X}.history")
        conn = await asyncpg.connect(secret(fresh.admin_url))
        try:
            assert await conn.fetchval("SHOW archive_mode") == "on"
            assert await conn.fetchval("SHOW recovery_target_time") == ""
        finally:
            await conn.close()
        # its first backup, and an old one across the timeline switch, verify
        assert switch["backup"] and (await backup.verify(fresh, switch["backup"]))["ok"]
        oldest = min(old_backups)
        checked = await backup.verify(fresh, oldest)
        assert checked["ok"] and int(checked["wal"]["last"][:8], 16) == timeline, checked
        listed = await backup.list_backups(fresh)
        assert {b["id"] for b in listed["backups"] if b["restorable"]} >= old_backups
        with pytest.raises(UsageError, match="part of the cluster"):
            await pitr.discard(rs.settings(), report["node"])
    finally:
        # rs's `down(purge=True)` stops the restored node (cluster.json names it now)
        await rs.cluster.down()
        shutil.rmtree(target, ignore_errors=True)
