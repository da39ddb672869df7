"""pgBackRest backups: the catalog stays honest (through kills), verify catches damage,
retention keeps and drops the right backups and WAL, the schedule, backup before deploy.

The rules (retention, WAL continuity across timelines) are tested as functions first;
then a cluster of this module's own is backed up for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cardmint.config import secret
from cardmint.db import migrate
from cardmint.errors import BackupError
from cardmint.ops import facts
from cardmint.ops.backups import backup, retention, store
from support import TestCluster, poll, start_cluster

ROOT = Path(__file__).resolve().parent.parent
SEG = 16 * 1024 * 1024
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


# -- rules, without a server ---------------------------------------------------------

def test_retention_keeps_recent_backups_and_never_fewer_than_the_minimum() -> None:
    days = {f"b{i}": T0 + timedelta(days=i) for i in range(10)}  # b9 newest
    now = T0 + timedelta(days=10)
    plan = retention.plan(days, now, retention=timedelta(days=7), min_keep=2)
    assert plan.keep == ["b9", "b8", "b7", "b6", "b5", "b4", "b3"]
    assert plan.drop == ["b2", "b1", "b0"] and plan.oldest_kept == "b3"
    # a month later only the minimum stays: the newest two
    later = retention.plan(days, now + timedelta(days=30), retention=timedelta(days=7),
                           min_keep=2)
    assert later.keep == ["b9", "b8"] and later.oldest_kept == "b8"
    assert retention.plan({}, now, retention=timedelta(days=7), min_keep=2).oldest_kept is None


def test_a_backup_is_due_daily() -> None:
    day = timedelta(hours=24)
    assert retention.due(None, T0, day)
    assert not retention.due(T0, T0 + timedelta(hours=23), day)
    assert retention.due(T0, T0 + day, day)


def seg(tli: int, n: int) -> str:
    return f"{tli:08X}{n // 256:08X}{n % 256:08X}"


def test_wal_continuity_follows_the_timeline_history_and_finds_gaps() -> None:
    # what pgbackrest verify reports: runs of WAL; timeline 2 continues 1 from segment 5
    ranges = [(seg(1, 2), seg(1, 5)), (seg(2, 5), seg(2, 8))]
    ok = backup._continuity(ranges, seg(1, 2), seg(1, 2))
    assert ok["ok"] and (ok["first"], ok["last"]) == (seg(1, 2), seg(2, 8))
    gap = backup._continuity([(seg(1, 2), seg(1, 3)), (seg(1, 5), seg(1, 8))], seg(1, 2),
                             seg(1, 2))
    assert not gap["ok"] and seg(1, 3) in gap["detail"]
    # older WAL before the backup does not matter; the archive must reach the backup's end
    old = backup._continuity([(seg(1, 1), seg(1, 1)), (seg(1, 3), seg(1, 4))], seg(1, 3),
                             seg(1, 3))
    assert old["ok"]
    short = backup._continuity([(seg(1, 2), seg(1, 2))], seg(1, 2), seg(1, 3))
    assert not short["ok"]
    assert not backup._continuity([], seg(1, 2), seg(1, 2))["ok"]


def test_status_judges_archiving_and_backup_age() -> None:
    from support import make_settings

    s = make_settings(Path("/nonexistent"))
    healthy = facts.Archiver(5, 0, seg(1, 5), T0, None, None, "on", 30.0, False)
    stuck = facts.Archiver(5, 3, seg(1, 5), T0, seg(1, 6), T0 + timedelta(minutes=1), "on",
                           90.0, True)
    fresh = {"id": "x", "age_s": 3600.0}
    assert backup.judge(healthy, fresh, s) == ([], "ok")
    assert backup.judge(stuck, fresh, s)[1] == "critical"
    assert backup.judge(healthy, None, s)[1] == "warn"
    assert backup.judge(healthy, {"id": "x", "age_s": 30 * 3600.0}, s)[1] == "warn"
    assert backup.judge(healthy, {"id": "x", "age_s": 60 * 3600.0}, s)[1] == "critical"


# -- a cluster of our own ---------------------------------------------------------------

@pytest.fixture(scope="module")
async def bk(work_root: Path, template_dir: Path):
    tc = await start_cluster(work_root, template_dir, "backup", replicas=0)
    try:
        yield tc
    finally:
        await tc.cluster.down(purge=True)


async def migrated(tc: TestCluster) -> None:
    await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))


def cardmint(home: Path | None, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    full["COLUMNS"] = "200"
    if home is not None:
        full["CARDMINT_HOME"] = str(home)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                          text=True, env=full, timeout=timeout, cwd=ROOT)


async def catalog_rows(tc: TestCluster) -> dict[str, dict]:
    conn = await tc.admin()
    try:
        return {r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM backups")}
    finally:
        await conn.close()


def basebackup_pids(home: Path) -> list[int]:
    """The `pgbackrest ... backup` command of this home (not its worker processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"pgbackrest") and b"backup" in argv \
                    and any(str(home).encode() in a for a in argv):
                found.append(int(entry.name))
    return found


async def test_upgrade_backs_up_first_and_the_catalog_adopts_the_backup(bk: TestCluster) -> None:
    dsn = secret(bk.settings().migration_url)
    if await asyncio.to_thread(migrate.current, dsn) is not None:
        await asyncio.to_thread(migrate.downgrade, dsn, "base")
    done = cardmint(bk.home, "db", "upgrade", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["from"] is None and report["to"] == migrate.head()
    taken = report["backup"]
    assert taken and taken in store.finished(store.site(bk.settings()))
    # the table did not exist when the backup was taken: the next list enters it
    listed = await backup.list_backups(bk.settings())
    assert listed["source"] == "catalog"
    assert any(taken in note for note in listed["notes"])
    row = next(b for b in listed["backups"] if b["id"] == taken)
    assert row["status"] == "ok" and row["restorable"]
    # nothing pending now: no second backup
    again = json.loads(cardmint(bk.home, "db", "upgrade", "--json").stdout)
    assert again["backup"] is None and again["backup_skipped"] == "no migration pending"


async def test_create_list_verify_and_status(bk: TestCluster) -> None:
    await migrated(bk)
    done = cardmint(bk.home, "backup", "create", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert {"id", "started_at", "finished_at", "size_bytes", "duration_s", "throughput_mb_s",
            "start_lsn", "end_lsn", "verified"} <= set(made)
    assert made["verified"] is False and made["compression"] == "zst" and made["encrypted"]
    assert made["size_bytes"] > 0 and made["throughput_mb_s"] > 0 and made["timeline"] == 1
    assert made["type"] == "full" and made["label"].endswith("F")
    path = backup_dir(bk, made)
    assert (path / "backup.manifest").is_file() and (path / "pg_data").is_dir()
    assert oct((bk.home / "backups").stat().st_mode & 0o777) == "0o700"

    verified = await backup.verify(bk.settings(), made["id"])
    assert verified["ok"], verified
    assert verified["wal"]["first"] == backup.start_segment(made)
    row = (await catalog_rows(bk))[made["id"]]
    assert row["status"] == "ok" and row["verified"] and row["verified_at"] is not None
    assert row["start_lsn"] == made["start_lsn"] and row["end_lsn"] == made["end_lsn"]

    listed = json.loads(cardmint(bk.home, "backup", "list", "--json").stdout)
    assert listed["backups"][0]["id"] == made["id"] and listed["backups"][0]["verified"]

    done = cardmint(bk.home, "backup", "status", "--json")
    status = json.loads(done.stdout)
    assert done.returncode == 0 and status["status"] == "ok", status
    assert status["latest_backup"]["id"] == made["id"]
    assert status["archiver"]["archive_mode"] == "on" and not status["archiver"]["failing"]
    assert status["archive"]["segments"] >= 1 and status["archive"]["size_bytes"] > 0

    # an incremental on top of it; --diff and --incr together are a usage error
    done = cardmint(bk.home, "backup", "create", "--incr", "--json")
    assert done.returncode == 0, done.stderr
    incr = json.loads(done.stdout)
    assert incr["type"] == "incr" and incr["label"].startswith(made["label"] + "_")
    assert incr["size_bytes"] < made["size_bytes"]
    done = cardmint(bk.home, "backup", "create", "--diff", "--incr", "--json")
    assert done.returncode == 3 and "not both" in json.loads(done.stdout)["error"]


def backup_dir(tc: TestCluster, made: dict) -> Path:
    return tc.home / "backups" / "backup" / "cardmint" / made["label"]


async def test_verify_catches_a_corrupted_and_a_missing_file(bk: TestCluster) -> None:
    await migrated(bk)
    made = await backup.create(bk.settings())
    victim = "global/pg_control"
    stored = backup_dir(bk, made) / "pg_data" / (victim + ".zst")
    original = stored.read_bytes()
    stored.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    report = await backup.verify(bk.settings(), made["id"])
    assert not report["ok"] and "invalid checksum" in report["files"]["detail"]
    assert victim in report["files"]["detail"]
    assert (await catalog_rows(bk))[made["id"]]["verified"] is False

    stored.unlink()
    report = await backup.verify(bk.settings(), made["id"])
    assert not report["ok"] and victim in report["files"]["detail"]
    assert "missing" in report["files"]["detail"]

    stored.write_bytes(original)
    os.chown(stored, stored.parent.stat().st_uid, stored.parent.stat().st_gid)
    assert (await backup.verify(bk.settings(), made["id"]))["ok"]


async def test_a_killed_pgbackrest_fails_the_backup_honestly(bk: TestCluster) -> None:
    await migrated(bk)
    before = set(store.finished(store.site(bk.settings())))
    task = asyncio.create_task(backup.create(bk.settings(), max_rate="32k"))
    pids = await poll(lambda: basebackup_pids(bk.home))
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(BackupError, match="killed by signal 9"):
        await task
    failed = [r for r in (await catalog_rows(bk)).values() if r["status"] == "failed"]
    assert any("killed by signal 9" in (r["error"] or "") and r["finished_at"] for r in failed)
    s = store.site(bk.settings())
    assert set(store.finished(s)) == before


async def test_a_killed_backup_command_is_marked_failed_once_nothing_runs(
        bk: TestCluster) -> None:
    await migrated(bk)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [sys.executable, "-m", "cardmint", "backup", "create", "--max-rate", "32k"],
        env={**env, "CARDMINT_HOME": str(bk.home)}, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        orphan = (await poll(lambda: basebackup_pids(bk.home), timeout=30))[0]
        running = [r for r in (await catalog_rows(bk)).values() if r["status"] == "running"]
        assert len(running) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # pgbackrest still runs (and holds the lock): the row is left alone
        listed = await backup.list_backups(bk.settings())
        assert next(b for b in listed["backups"] if b["id"] == running[0]["id"])[
            "status"] == "running"
    finally:
        for pid in basebackup_pids(bk.home):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    await poll(lambda: not basebackup_pids(bk.home))
    listed = await backup.list_backups(bk.settings())
    row = next(b for b in listed["backups"] if b["id"] == running[0]["id"])
    assert row["status"] == "failed" and "interrupted" in row["error"] and not row["restorable"]
    assert orphan


async def test_prune_keeps_and_drops_the_right_backups_and_wal(bk: TestCluster) -> None:
    await migrated(bk)
    made = []
    conn = await bk.admin()
    try:
        for _ in range(3):
            made.append(await backup.create(bk.settings()))
            await conn.execute("INSERT INTO incidents (title, severity) VALUES ('w', 'P2')")
            await conn.execute("SELECT pg_switch_wal()")
    finally:
        await conn.close()
    b1, b2, b3 = made
    s = store.site(bk.settings())
    started = {b["id"]: datetime.fromisoformat(b["started_at"]) for b in made}

    # within the retention no backup goes, only WAL older than the oldest backup
    oldest = min(store.finished(s).values(), key=lambda m: m["started_at"])
    kept = await backup.prune(bk.settings(), now=started[b3["id"]] + timedelta(days=1))
    assert kept["removed"] == [] and b1["id"] in kept["kept"]
    assert kept["wal_kept_from"] == backup.start_segment(oldest)

    # b1 (and all older) fall out of the 7 days; WAL before b2's start goes with them
    now = started[b2["id"]] + timedelta(days=7) - timedelta(milliseconds=1)
    settings = bk.settings(backup_min_keep=1)
    dry = await backup.prune(settings, now=now, dry_run=True)
    assert backup_dir(bk, b1).is_dir() and dry["removed"]
    pruned = await backup.prune(settings, now=now)
    assert pruned["kept"] == [b3["id"], b2["id"]] and b1["id"] in pruned["removed"]
    assert pruned == {**dry, "dry_run": False}
    assert set(store.finished(s)) == {b2["id"], b3["id"]}
    rows = await catalog_rows(bk)
    assert b1["id"] not in rows and rows[b2["id"]]["status"] == "ok"
    keep_from = backup.start_segment(b2)
    assert pruned["wal_kept_from"] == keep_from and pruned["wal_removed"] > 0
    left = sorted(p.name[:24] for p in (bk.home / "backups" / "archive").glob("*/*/*/*")
                  if re.match(r"^[0-9A-F]{24}-", p.name))
    assert left[0][8:] == keep_from[8:] and store.archived(s, keep_from)
    assert (await backup.verify(bk.settings(), b2["id"]))["ok"]

    # a month on, the minimum (2 by default) still stands
    later = started[b3["id"]] + timedelta(days=30)
    assert (await backup.prune(bk.settings(), now=later))["removed"] == []
    # ... and with a minimum of 1 only the newest stays
    last = await backup.prune(settings, now=later)
    assert last["kept"] == [b3["id"]] and last["wal_kept_from"] == backup.start_segment(b3)
    assert (await backup.verify(bk.settings(), b3["id"]))["ok"]


async def test_schedule_takes_a_backup_only_when_one_is_due(bk: TestCluster) -> None:
    await migrated(bk)
    s = store.site(bk.settings())
    newest = max(datetime.fromisoformat(m["started_at"]) for m in store.finished(s).values())
    quiet = await backup.schedule_once(bk.settings(), now=newest + timedelta(hours=1))
    assert not quiet["due"] and quiet["backup"] is None and quiet["prune"]["removed"] == []
    due = await backup.schedule_once(bk.settings(), now=newest + timedelta(hours=25))
    assert due["due"] and due["backup"]["status"] == "ok"
    assert due["backup"]["id"] in due["prune"]["kept"]


async def test_upgrade_without_backup_and_without_a_local_cluster(
        bk: TestCluster, empty_database: str, work_root: Path) -> None:
    before = set(store.finished(store.site(bk.settings())))
    done = cardmint(bk.home, "db", "upgrade", "--no-backup", "--json",
                    env={"CARDMINT_MIGRATION_URL": empty_database})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backup"] is None and "--no-backup" in report["backup_skipped"]
    assert "no backup before the migration" in done.stderr
    assert set(store.finished(store.site(bk.settings()))) == before

    nowhere = work_root / "no-cluster-here"
    done = cardmint(nowhere, "db", "downgrade", "base", env={
        "CARDMINT_MIGRATION_URL": empty_database})
    assert done.returncode == 0, done.stderr
    done = cardmint(nowhere, "db", "upgrade", "--json",
                    env={"CARDMINT_MIGRATION_URL": empty_database})
    assert done.returncode == 0, done.stderr
    assert "no local cluster" in json.loads(done.stdout)["backup_skipped"]
    done = cardmint(nowhere, "backup", "create", "--json")
    assert done.returncode == 3 and "no cluster at" in json.loads(done.stdout)["error"]
