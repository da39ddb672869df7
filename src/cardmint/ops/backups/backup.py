"""`cardmint backup ...`: pgBackRest backups (full, differential, incremental) of the
current primary with a catalog of attempts, verification, retention, the daily schedule
and WAL archiving status.

pgBackRest copies the data directory itself (from the primary, as the server's OS
user), compressed with zstd and encrypted, into every repository the cluster home
names; continuous WAL archiving (`archive-push`, asynchronous, set up by `cluster up`)
carries every later change into the same repositories.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from cardmint.clock import utc
from cardmint.cluster.pg import backrest, repohost
from cardmint.cluster.pg.admin import NodeAdmin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.provider import open_managed
from cardmint.cluster.state import SUPERUSER
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.dsn import redact
from cardmint.errors import BackupError, CardmintError, ConfigError, DatabaseUnavailable, UsageError
from cardmint.ops import facts
from cardmint.ops.backups import records, retention, store

TYPES = ("full", "diff", "incr")


@asynccontextmanager
async def catalog_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection | None]:
    """The owner role's connection to the primary, or None when there is none to be had
    (pgBackRest still answers for which backups exist)."""
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
    return str(meta["start_segment"])


def _db_env(s: store.Site) -> dict[str, str]:
    return backrest.db_env(s.home, s.user, NodeAdmin(s.settings).passwords()[SUPERUSER])


ROOT = OsUser(None, 0, 0)  # `ip netns exec` needs root; the command inside drops to the user


def _on_repo(s: store.Site, n: int, command: str,
             *options: str) -> tuple[list[str], OsUser]:
    """argv of a pgBackRest command for repository `n`: run here, or, for a repository
    host made on this machine, on that host (pgBackRest backs up and expires a remote
    repository only from its own host, and 2.45's verify over TLS fails). With the user
    to start it as."""
    repo = next((r for r in backrest.repos(s.home) if r.index == n), None)
    if repo is not None and repo.kind == "tls" and command in ("backup", "expire", "verify"):
        host = repohost.load(Path(repo.local_host)) if repo.local_host else None
        if host is None or host.pid is None:
            raise BackupError(f"repo{n} is a repository host: run `pgbackrest {command}` "
                              "there (its own schedule)")
        primary = s.state.primary
        repohost.host_conf(host, pg_path=primary.datadir, pg_port=primary.port,
                           cipher_pass=backrest.cipher_pass(s.settings.secrets_path),
                           retention_full_days=max(1, math.ceil(
                               s.settings.backup_retention_days)))
        # there it is that host's repo1
        local = [o.replace(f"--repo{n}-", "--repo1-") for o in options]
        return repohost.host_argv(host, s.user, command, *local), ROOT
    return backrest.base_argv(s.home, command, f"--repo={n}", *options), s.user


# -- create ------------------------------------------------------------------------

async def create(settings: Settings, *, max_rate: str | None = None,
                 kind: str = "full", repo: int | None = None) -> dict[str, Any]:
    """Take a backup of the current primary (`kind`: full, diff or incr; into every
    repository, or only `repo`) and record it. Raises BackupError (and leaves a `failed`
    row) when it fails."""
    if kind not in TYPES:
        raise UsageError(f"backup type {kind!r}: one of {', '.join(TYPES)}")
    s = store.site(settings)
    with store.locked(s) as lock_fd:
        if lock_fd is None:
            raise BackupError(f"another backup is running ({s.backups / '.lock'} is held)")
        async with catalog_connection(settings) as conn:
            if conn is None:
                raise BackupError("the primary cannot be reached (owner role): nothing to "
                                  "back up from")
            await records.reconcile(conn, s, holding_lock=True)
            return await _take(s, conn, lock_fd, max_rate, kind, repo)


def _rate_limit(max_rate: str) -> list[str]:
    """--max-rate (e.g. 32k, 50M) has no byte-rate equivalent in pgBackRest 2.45: a
    gentle backup is one process with small buffers and slow, dense compression."""
    if not re.fullmatch(r"\d+[kKmM]?", max_rate):
        raise UsageError(f"--max-rate {max_rate!r}: a rate like 32k or 50M")
    return ["--process-max=1", "--buffer-size=16KiB", "--compress-level=19"]


def _repos(s: store.Site, repo: int | None) -> list[int]:
    known = [1, *(r.index for r in backrest.repos(s.home))]
    if repo is not None and repo not in known:
        raise UsageError(f"--repo {repo}: the repositories are {', '.join(map(str, known))}")
    return [repo] if repo is not None else known


async def _take(s: store.Site, conn: asyncpg.Connection, lock_fd: int,
                max_rate: str | None, kind: str, repo: int | None) -> dict[str, Any]:
    primary = await open_managed(s.settings, "a backup").resolve("primary")
    s.configure()
    catalogued = await records.available(conn)
    taken = {r["id"] for r in await records.rows(conn)} if catalogued else set()
    before = store.finished(s)
    backup_id = store.new_id(s, taken=taken | set(before))
    started_at = utc()
    began = time.monotonic()
    if catalogued:
        await records.start(conn, backup_id, started_at, primary.name,
                            Path(f"pgbackrest:{backup_id}"))
    warnings: list[str] = []
    try:
        throttle = _rate_limit(max_rate) if max_rate else []
        made: dict[str, Any] | None = None
        for n in _repos(s, repo):
            argv, runner = _on_repo(s, n, "backup", f"--type={kind}",
                                    f"--annotation={store.ANNOTATION}={backup_id}", *throttle)
            await store.run(runner, argv, pass_fds=(lock_fd,), env=_db_env(s))
            found = [m for m in store.finished(s, s.info(f"--repo={n}")).values()
                     if m["id"] == backup_id]
            if not found:
                raise BackupError(f"pgbackrest finished but repo{n} does not list backup "
                                  f"{backup_id}")
            made = made or found[0]
        assert made is not None
        duration = time.monotonic() - began
        # The backup's last segment is archived before pgbackrest returns (archive-check).
        # started_at and finished_at are pgBackRest's (whole seconds), as `list` and
        # prune see them; the duration is the command's own
        meta = {
            **made, "duration_s": round(duration, 3),
            "throughput_mb_s": round(made["delta_bytes"] / 2**20 / max(duration, 1e-3), 1),
            "node": primary.name, "pg_version": s.pg.version, "verified": False,
            "verified_at": None, "repos": _repos(s, repo),
        }
    except BaseException as exc:
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
    """The catalog (after reconciling it with pgBackRest's info), newest first;
    pgBackRest alone when the database cannot be asked."""
    s = store.site(settings)
    with store.locked(s) as lock_fd:
        async with catalog_connection(settings) as conn:
            on_disk = store.finished(s)
            notes = await records.reconcile(conn, s, holding_lock=lock_fd is not None,
                                            on_disk=on_disk)
            if conn is not None and await records.available(conn):
                items = await records.rows(conn)
                source = "catalog"
            else:
                items = [_from_meta(m) for m in sorted(on_disk.values(),
                                                       key=lambda m: m["started_at"],
                                                       reverse=True)]
                source = "disk"
    for item in items:
        found = on_disk.get(item["id"])
        item["on_disk"] = found is not None
        item["restorable"] = item["status"] == "ok" and found is not None
        item["type"] = found["type"] if found else None
        item["label"] = found["label"] if found else None
    return {"source": source, "backups": items, "notes": notes}


def _from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "status", "started_at", "finished_at", "start_lsn", "end_lsn", "timeline",
            "size_bytes", "duration_s", "throughput_mb_s", "node", "path")
    return {k: meta.get(k) for k in keys} | {"verified": False, "verified_at": None,
                                            "error": None}


# pgBackRest's verify logs one line per bad file ("invalid checksum '<label>/<path>'",
# "file missing '...'"), and each run of contiguous WAL as "wal start: A, wal stop: B".
BAD_FILE = re.compile(r"P\d+ +(?:INFO|WARN|ERROR): ([a-z][a-z ]+) '([^']+)'")
WAL_RANGE = re.compile(r"wal start: ([0-9A-F]{24}), wal stop: ([0-9A-F]{24})")
BACKUP_STATUS = re.compile(r"backup: (\S+), status: (\w+)")


async def verify(settings: Settings, backup_id: str, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """`pgbackrest verify` of the repository that holds the backup: every file of every
    backup against its manifest's checksums (so this backup's and those it depends on),
    and the archive's WAL, which must run without a gap from the backup's start to the
    archive's end. Records the verdict."""
    s = store.site(settings)
    meta = store.meta(s, backup_id)
    s.configure()
    argv, runner = _on_repo(s, meta["repo"], "verify", "--output=text", "--verbose",
                            "--log-level-console=detail")
    try:
        out = await store.run(runner, argv)
        failed = ""
    except BackupError as exc:
        out, failed = str(exc), str(exc)
    chain = set(_chain(s, meta))
    bad = [f"{what} {path.split('/', 1)[-1]}" for what, path in BAD_FILE.findall(out)
           if path.split("/", 1)[0] in chain]
    bad += [f"backup {label} is {state}" for label, state in BACKUP_STATUS.findall(out)
            if label in chain and state != "valid" and not bad]
    files_ok = not bad and not failed
    detail = ("; ".join(bad)[:1500] if bad else failed[:1500] if failed else
              f"every file of {', '.join(sorted(chain))} matches its manifest's checksum")
    wal = _continuity(WAL_RANGE.findall(out), start_segment(meta), meta["end_segment"])
    ok = files_ok and wal["ok"]
    verified_at = utc(now)
    async with catalog_connection(settings) as conn:
        if conn is not None and await records.available(conn):
            await records.set_verified(conn, backup_id, ok, verified_at)
    return {"id": backup_id, "ok": ok, "verified_at": verified_at, "label": meta["label"],
            "files": {"ok": files_ok, "detail": detail}, "wal": wal}


def _chain(s: store.Site, meta: dict[str, Any]) -> list[str]:
    """The backup's label and those of the backups it depends on (its full, a diff)."""
    by_label = {m["label"]: m for m in store.finished(s).values()}
    labels: list[str] = []
    current: dict[str, Any] | None = meta
    while current is not None:
        labels.append(current["label"])
        current = by_label.get(current.get("prior") or "")
    return labels


def _continuity(ranges: list[tuple[str, str]], start: str, end: str) -> dict[str, Any]:
    """Does one run of archived WAL cover the backup's start through the archive's end?
    Segments compare by their number (name without the timeline) within a timeline path;
    a later timeline's run continues an earlier one."""
    def key(segment: str) -> str:
        return segment[8:] + segment[:8]

    after = sorted((r for r in ranges if key(r[1]) >= key(start)), key=lambda r: key(r[0]))
    if not after or key(after[0][0]) > key(start):
        return {"ok": False, "first": start, "last": None,
                "detail": f"the archive holds no WAL from the backup's start {start}"}
    last = after[0][1]
    gaps = []
    for begin, stop in after[1:]:
        if int(begin[8:], 16) > int(last[8:], 16) + 1 and begin[8:] > last[8:]:
            gaps.append(f"{last} .. {begin}")
        last = max(last, stop, key=key)
    if key(last) < key(end):
        gaps.append(f"after {last} (the backup ends in {end})")
    ok = not gaps
    detail = (f"WAL {start} .. {last} without a gap" if ok else
              f"WAL gap {gaps[0]}: a restore from this backup stops there")
    return {"ok": ok, "first": start, "last": last, "detail": detail}


# -- prune, schedule -------------------------------------------------------------------

async def prune(settings: Settings, *, now: datetime | None = None,
                dry_run: bool = False) -> dict[str, Any]:
    """The runbook's retention: backups older than `backup_retention_days` go (never
    fewer than `backup_min_keep`), by `pgbackrest expire --set`, which also removes what
    depends on them and the WAL no kept backup needs."""
    now = utc(now)
    s = store.site(settings)
    keep_for = timedelta(days=settings.backup_retention_days)
    with store.locked(s) as lock_fd:
        if lock_fd is None:
            raise BackupError("a backup is running: prune after it finishes")
        async with catalog_connection(settings) as conn:
            on_disk = store.finished(s)
            notes = await records.reconcile(conn, s, holding_lock=True, on_disk=on_disk)
            fulls = {b: m for b, m in on_disk.items() if m["type"] == "full"}
            plan = retention.plan(
                {b: datetime.fromisoformat(m["started_at"]) for b, m in fulls.items()},
                now, retention=keep_for, min_keep=settings.backup_min_keep)
            # a differential or incremental goes with the full backup it depends on
            doomed_labels = {fulls[b]["label"] for b in plan.drop}
            drop = sorted((b for b, m in on_disk.items()
                           if m["label"].split("_")[0] in doomed_labels), reverse=True)
            keep = sorted((b for b in on_disk if b not in drop), reverse=True)
            keep_from = start_segment(fulls[plan.oldest_kept]) if plan.oldest_kept else None
            failed_dropped = 0
            if conn is not None and await records.available(conn):
                if not dry_run:
                    await records.delete(conn, drop)
                failed_dropped = await records.delete_failed_before(conn, now - keep_for,
                                                                    dry_run=dry_run)
            doomed_wal = [f for f in _archive_files(s) if keep_from
                          and f.name[8:24] < keep_from[8:24]]
            freed = sum(_size(f) for f in doomed_wal)
            if not dry_run:
                s.configure()
                copies = [store.describe(b) for b in s.info().get("backup", [])]
                for c in copies:
                    if c["id"] in plan.drop:  # in every repository that holds it
                        await store.run(*_swap(_on_repo(s, c["repo"], "expire",
                                                        f"--set={c['label']}")))
                # then the WAL no kept full backup needs (expire --set keeps it)
                for n in sorted({c["repo"] for c in copies}):
                    await store.run(*_swap(_on_repo(
                        s, n, "expire", f"--repo{n}-retention-full-type=count",
                        f"--repo{n}-retention-full={len(plan.keep)}")))
    return {"ok": True, "dry_run": dry_run, "now": now, "kept": keep, "removed": drop,
            "wal_kept_from": keep_from, "wal_removed": len(doomed_wal),
            "wal_removed_bytes": freed,
            "failed_rows_removed": failed_dropped, "notes": notes}


def _swap(found: tuple[list[str], OsUser]) -> tuple[OsUser, list[str]]:
    return found[1], found[0]


def _archive_files(s: store.Site) -> list[Path]:
    """repo1's archived WAL files (names are readable when encrypted)."""
    base = s.backups / "archive" / backrest.STANZA
    return sorted(p for p in base.glob("*/*/*") if p.is_file())


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
    thresholds health uses; the repositories as pgBackRest's info sees them."""
    now = utc(now)
    dsn = settings.owner_dsn()
    async with connection(dsn, settings, application="cardmint-backup") as conn:
        archiver = await facts.archiver(conn)
        latest = await facts.latest_backup(conn)
    try:
        s: store.Site | None = store.site(settings)
    except ConfigError:
        s = None
    info = await asyncio.to_thread(s.info) if s is not None and \
        backrest.Paths(s.home).conf.exists() else None
    archive = _archive_figures(s, info, now) if s is not None else None
    problems, level = judge(archiver, latest, settings)
    return {"status": level, "problems": problems, "archiver": facts.as_dict(archiver),
            "archive": archive, "latest_backup": latest,
            "repos": _repo_status(info), "backups_on_disk":
                len(store.finished(s, info)) if s is not None and info is not None else None}


def _repo_status(info: dict[str, Any] | None) -> list[dict[str, Any]]:
    if info is None:
        return []
    return [{"repo": r.get("key"), "cipher": r.get("cipher"),
             "status": (r.get("status") or {}).get("message")} for r in info.get("repo", [])]


def _archive_figures(s: store.Site, info: dict[str, Any] | None,
                     now: datetime) -> dict[str, Any]:
    files = _archive_files(s)
    segments = [f for f in files if re.match(r"^[0-9A-F]{24}-", f.name)]
    newest = max(segments, key=lambda f: f.name[8:24] + f.name[:8], default=None)
    ranges = [{"id": a.get("id"), "min": a.get("min"), "max": a.get("max")}
              for a in (info or {}).get("archive", [])]
    return {"path": str(s.backups / "archive"), "segments": len(segments),
            "histories": len([f for f in files if f.name.endswith(".history")]),
            "size_bytes": sum(_size(f) for f in files),
            "newest": newest.name[:24] if newest else None,
            "newest_age_s": round(now.timestamp() - newest.stat().st_mtime, 1)
            if newest else None, "ranges": ranges}


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
