"""`cardmint backup ...`: base backups with a catalog, verification, retention, the daily
schedule and WAL archiving status.

A backup is `pg_basebackup` from the current primary as the replication role: tar
format, compressed by the server with zstd, the WAL of its own span streamed alongside
(`-X stream`), a manifest with CRC32C checksums. Continuous WAL archiving (set up by
`cluster up`) carries every later change into `$CARDMINT_HOME/wal-archive`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from cardmint.clock import utc
from cardmint.cluster.pg.admin import NodeAdmin
from cardmint.cluster.provider import open_managed
from cardmint.cluster.state import REPLICATION
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.dsn import redact
from cardmint.errors import BackupError, CardmintError, ConfigError, DatabaseUnavailable
from cardmint.ops import facts
from cardmint.ops.backups import records, retention, store, wal

DEFAULT_SEGMENT = 16 * 1024 * 1024
MB = 1024 * 1024


@asynccontextmanager
async def catalog_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection | None]:
    """The owner role's connection to the primary, or None when there is none to be had
    (the disk still answers for which backups exist)."""
    dsn = secret(settings.migration_url)
    async with AsyncExitStack() as stack:
        conn = None
        if dsn:
            try:
                conn = await stack.enter_async_context(
                    connection(dsn, settings, application="cardmint-backup"))
            except DatabaseUnavailable:
                conn = None
        yield conn


def start_segment(meta: dict[str, Any]) -> str:
    seg_size = meta.get("wal_segment_size", DEFAULT_SEGMENT)
    return wal.name(meta["timeline"], wal.segno(meta["start_lsn"], seg_size), seg_size)


# -- create ------------------------------------------------------------------------

async def create(settings: Settings, *, max_rate: str | None = None) -> dict[str, Any]:
    """Take a base backup of the current primary and record it. Raises BackupError (and
    leaves no directory restore could pick, and a `failed` row) when it fails."""
    s = store.site(settings)
    with store.locked(s) as lock_fd:
        if lock_fd is None:
            raise BackupError(f"another backup is running ({s.backups / '.lock'} is held)")
        async with catalog_connection(settings) as conn:
            if conn is None:
                raise BackupError("the primary cannot be reached (owner role): nothing to "
                                  "back up from")
            await records.reconcile(conn, s, holding_lock=True)
            return await _take(s, conn, lock_fd, max_rate)


async def _take(s: store.Site, conn: asyncpg.Connection, lock_fd: int,
                max_rate: str | None) -> dict[str, Any]:
    primary = await open_managed(s.settings, "a base backup").resolve("primary")
    catalogued = await records.available(conn)
    taken = {r["id"] for r in await records.rows(conn)} if catalogued else set()
    backup_id = store.new_id(s, taken=taken)
    partial = s.partial(backup_id)
    s.user.own(s.backups)  # 0700: a backup holds every row and every password verifier
    s.user.own(partial)
    started_at = utc()
    began = time.monotonic()
    if catalogued:
        await records.start(conn, backup_id, started_at, primary.name, s.final(backup_id))
    try:
        seg_size = int(await conn.fetchval(
            "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'"))
        compress = ["--compress=server-zstd"] if s.pg.major >= 15 and store.zstd_available() \
            else []
        argv = [
            s.pg("pg_basebackup"), "-D", str(partial), "--format=tar", "--wal-method=stream",
            "--checkpoint=fast", "--manifest-checksums=CRC32C", *compress,
            "-h", primary.host, "-p", str(primary.port), "-U", REPLICATION, "--no-password",
            "--label", f"cardmint {backup_id}",
            *(["--max-rate", max_rate] if max_rate else []),
        ]
        password = NodeAdmin(s.settings).passwords()[REPLICATION]
        await store.run(s.user, argv, pass_fds=(lock_fd,),
                        env={"PGPASSWORD": password, "PGAPPNAME": "cardmint-backup"})
        duration = time.monotonic() - began
        found = store.read_manifest(partial)
        end_segment = wal.name(found["end_timeline"], wal.segno(found["end_lsn"], seg_size),
                               seg_size)
        warnings = []
        # The backup's end segment is switched out by the backup's stop; once archived,
        # the archive continues where the backup ends.
        if not await store.await_archived(s.archive, end_segment,
                                          s.settings.backup_archive_wait_s):
            warnings.append(f"WAL segment {end_segment} was not archived within "
                            f"{s.settings.backup_archive_wait_s:g} s: check `backup status`")
        meta = {
            "id": backup_id, "status": "ok", "started_at": started_at.isoformat(),
            "finished_at": (started_at + timedelta(seconds=duration)).isoformat(),
            "start_lsn": found["start_lsn"], "end_lsn": found["end_lsn"],
            "timeline": found["timeline"], "wal_segment_size": seg_size,
            "end_segment": end_segment,
            "size_bytes": store.size_of(partial), "data_bytes": found["data_bytes"],
            "duration_s": round(duration, 3),
            "throughput_mb_s": round(found["data_bytes"] / MB / max(duration, 1e-3), 1),
            "compression": "server-zstd" if compress else "none",
            "node": primary.name, "path": str(s.final(backup_id)),
            "pg_version": s.pg.version, "verified": False, "verified_at": None,
        }
        store.write_meta(partial, meta)
        store.publish(s, backup_id)
    except BaseException as exc:
        store.remove(partial)
        reason = redact(str(exc)) or type(exc).__name__
        if catalogued:
            try:
                await records.finish_failed(conn, backup_id, reason)
            except (CardmintError, asyncpg.PostgresError, OSError):
                pass  # the next list/create marks the `running` row failed
        if isinstance(exc, CardmintError | OSError):
            raise BackupError(f"backup {backup_id} failed: {reason}") from exc
        raise
    if catalogued:
        await records.finish_ok(conn, meta)
    return {"ok": True, **meta, "catalogued": catalogued, "warnings": warnings}


# -- list, verify --------------------------------------------------------------------

async def list_backups(settings: Settings) -> dict[str, Any]:
    """The catalog (after reconciling it with the disk), newest first; the disk alone
    when the database cannot be asked."""
    s = store.site(settings)
    with store.locked(s) as lock_fd:
        async with catalog_connection(settings) as conn:
            notes = await records.reconcile(conn, s, holding_lock=lock_fd is not None)
            on_disk = store.finished(s)
            if conn is not None and await records.available(conn):
                items = await records.rows(conn)
                source = "catalog"
            else:
                items = [_from_meta(m) for m in sorted(on_disk.values(),
                                                       key=lambda m: m["started_at"],
                                                       reverse=True)]
                source = "disk"
    for item in items:
        item["on_disk"] = item["id"] in on_disk
        item["restorable"] = item["status"] == "ok" and item["on_disk"]
    return {"source": source, "backups": items, "notes": notes}


def _from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "status", "started_at", "finished_at", "start_lsn", "end_lsn", "timeline",
            "size_bytes", "duration_s", "throughput_mb_s", "verified", "verified_at", "node",
            "path")
    return {k: meta.get(k) for k in keys} | {"error": None}


async def verify(settings: Settings, backup_id: str, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """pg_verifybackup on the unpacked backup (every file against the manifest's
    checksums, and the backup's own WAL parsed), then the archive's continuity from
    the backup's start to the archive's end. Records the verdict."""
    s = store.site(settings)
    meta = store.meta(s, backup_id)
    scratch = s.backups / f".verify-{backup_id}"
    store.remove(scratch)
    files_ok, detail = True, "every file matches the manifest; the backup's WAL parses"
    try:
        await store.extract(s, backup_id, scratch)
        await store.run(s.user, [s.pg("pg_verifybackup"), "--quiet", "--exit-on-error",
                                 "-m", str(s.final(backup_id) / store.MANIFEST), str(scratch)])
    except BackupError as exc:
        files_ok, detail = False, str(exc)
    finally:
        store.remove(scratch)
    files, histories = wal.read_archive(s.archive)
    continuity = wal.continuity(
        files, histories, start_tli=meta["timeline"], start_lsn=meta["start_lsn"],
        end_lsn=meta["end_lsn"], seg_size=meta.get("wal_segment_size", DEFAULT_SEGMENT))
    ok = files_ok and continuity.ok
    verified_at = utc(now)
    meta.update(verified=ok, verified_at=verified_at.isoformat())
    store.write_meta(s.final(backup_id), meta)
    async with catalog_connection(settings) as conn:
        if conn is not None and await records.available(conn):
            await records.set_verified(conn, backup_id, ok, verified_at)
    return {"id": backup_id, "ok": ok, "verified_at": verified_at,
            "files": {"ok": files_ok, "detail": detail}, "wal": continuity.to_dict()}


# -- prune, schedule -------------------------------------------------------------------

async def prune(settings: Settings, *, now: datetime | None = None,
                dry_run: bool = False) -> dict[str, Any]:
    """Drop backups older than the retention (never leaving fewer than the minimum),
    and archived WAL older than the oldest kept backup's start."""
    now = utc(now)
    s = store.site(settings)
    keep_for = timedelta(days=settings.backup_retention_days)
    with store.locked(s) as lock_fd:
        if lock_fd is None:
            raise BackupError("a backup is running: prune after it finishes")
        async with catalog_connection(settings) as conn:
            notes = await records.reconcile(conn, s, holding_lock=True)
            on_disk = store.finished(s)
            plan = retention.plan(
                {b: datetime.fromisoformat(m["started_at"]) for b, m in on_disk.items()},
                now, retention=keep_for, min_keep=settings.backup_min_keep)
            keep_from = start_segment(on_disk[plan.oldest_kept]) if plan.oldest_kept else None
            files, _ = wal.read_archive(s.archive)
            # Without a backup to restore from, old WAL is all there is: keep it.
            doomed = wal.removable(files, keep_from) if keep_from else []
            freed = sum(_size(s.archive / f) for f in doomed)
            failed_dropped = 0
            if conn is not None and await records.available(conn):
                if not dry_run:
                    await records.delete(conn, plan.drop)
                failed_dropped = await records.delete_failed_before(conn, now - keep_for,
                                                                    dry_run=dry_run)
            if not dry_run:
                for backup_id in plan.drop:
                    store.remove(s.final(backup_id))
                for f in doomed:
                    (s.archive / f).unlink(missing_ok=True)
    return {"ok": True, "dry_run": dry_run, "now": now, "kept": plan.keep,
            "removed": plan.drop, "wal_kept_from": keep_from, "wal_removed": len(doomed),
            "wal_removed_bytes": freed, "failed_rows_removed": failed_dropped,
            "notes": notes}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def schedule_once(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """One turn of the daily schedule (the monitor's loop calls this): a backup when the
    newest is `backup_interval_h` old or there is none, then the retention."""
    now = utc(now)
    s = store.site(settings)
    starts = [datetime.fromisoformat(m["started_at"]) for m in store.finished(s).values()]
    is_due = retention.due(max(starts, default=None), now,
                           timedelta(hours=settings.backup_interval_h))
    made = await create(settings) if is_due else None
    pruned = await prune(settings, now=now)
    return {"ok": True, "due": is_due, "backup": made, "prune": pruned}


# -- status ----------------------------------------------------------------------------

async def status(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """WAL archiving health and the newest backup, judged against the backup-age
    thresholds health uses."""
    now = utc(now)
    dsn = settings.owner_dsn()
    async with connection(dsn, settings, application="cardmint-backup") as conn:
        archiver = await facts.archiver(conn)
        latest = await facts.latest_backup(conn)
    try:
        s: store.Site | None = store.site(settings)
    except ConfigError:
        s = None
    archive = _archive_figures(s, now) if s is not None else None
    problems, level = judge(archiver, latest, settings)
    return {"status": level, "problems": problems, "archiver": facts.as_dict(archiver),
            "archive": archive, "latest_backup": latest,
            "backups_on_disk": len(store.finished(s)) if s is not None else None}


def _archive_figures(s: store.Site, now: datetime) -> dict[str, Any]:
    files, histories = wal.read_archive(s.archive)
    segments = [f for f in files if wal.SEGMENT.match(f)]
    newest = max(segments, key=lambda f: f[8:] + f[:8], default=None)
    age = None
    if newest is not None:
        age = round(now.timestamp() - (s.archive / newest).stat().st_mtime, 1)
    return {"path": str(s.archive), "segments": len(segments), "histories": len(histories),
            "size_bytes": sum(_size(s.archive / f) for f in files), "newest": newest,
            "newest_age_s": age}


def judge(archiver: facts.Archiver, latest: dict[str, Any] | None,
          settings: Settings) -> tuple[list[str], str]:
    """ok / warn / critical, with the reasons: archiving stuck is critical (every
    minute adds WAL a restore cannot reach); an old or missing backup warns, then is
    critical past backup_age_critical_h."""
    problems: list[tuple[str, str]] = []
    if archiver.archive_mode == "off":
        problems.append(("warn", "archive_mode is off: no point-in-time recovery"))
    if archiver.failing:
        problems.append(("critical", f"archiving is failing since {archiver.last_failed_at} "
                                     f"(segment {archiver.last_failed_wal})"))
    if latest is None:
        problems.append(("warn", "no successful backup yet: run `cardmint backup create`"))
    else:
        hours = latest["age_s"] / 3600
        if hours > settings.backup_age_critical_h:
            problems.append(("critical", f"the newest backup is {hours:.1f} h old"))
        elif hours > settings.backup_age_warn_h:
            problems.append(("warn", f"the newest backup is {hours:.1f} h old"))
    levels = [lvl for lvl, _ in problems]
    level = "critical" if "critical" in levels else "warn" if levels else "ok"
    return [text for _, text in problems], level


# -- before a deploy -------------------------------------------------------------------

async def before_deploy(settings: Settings, *, pending: bool, skip: bool) -> dict[str, Any]:
    """The runbook's "backup before production deploy": a backup when migrations are
    pending, unless skipped. Says why when none is taken; raises BackupError when the
    backup fails (the deploy must not go ahead then)."""
    if not pending:
        return {"backup": None, "skipped": "no migration pending"}
    if skip:
        return {"backup": None, "skipped": "--no-backup: deploying without a backup"}
    try:
        s = store.site(settings)
    except ConfigError:
        return {"backup": None, "skipped": f"no local cluster in {settings.home.resolve()} to "
                "back up: take one with your provider before deploying"}
    target = _hosts(secret(settings.migration_url) or "")
    ours = {f"{n.host}:{n.port}" for n in s.state.nodes}
    if target and not target & ours:
        return {"backup": None, "skipped": "the database being migrated is not the local "
                "cluster's: take a backup of it with its provider before deploying"}
    try:
        made = await create(settings)
    except BackupError as exc:
        raise BackupError(f"{exc}; the migration was not run (pass --no-backup to deploy "
                          "without a backup)") from exc
    return {"backup": made, "skipped": None}


def _hosts(dsn: str) -> set[str]:
    netloc = urlsplit(dsn).netloc.rsplit("@", 1)[-1]
    return {h for h in netloc.split(",") if h}
