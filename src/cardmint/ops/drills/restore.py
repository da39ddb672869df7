"""The restore drill (runbook: monthly): lose the database host entirely, then restore
on a fresh host from the remote repository alone.

An independent writer (its own connection as the application role, not the card
service's code) inserts rows throughout, each with the WAL position it was written at.
A backup goes to the remote repository under that load; the writes go on; then every
server of the cluster is SIGKILLed by PID and the host's data directories and its
local repository (repo1) and archive spool are deleted. pgBackRest restores the newest
backup from the remote repository into a new directory and replays the WAL archived
there to its end (`--latest`, archive-get from that repository only); the copy is
verified and made the primary (`--repoint`). Then the tally: every acknowledged write
up to the end of the last archived segment must be there; the writes after it are the
data lost (RPO, as a count and in seconds), and the time from the loss to the first
moment the restored primary accepted writes is the recovery time (RTO).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.pg import backrest, process
from cardmint.cluster.pg.probe import parse_lsn
from cardmint.cluster.provider import engine_of
from cardmint.cluster.state import load, refreshed
from cardmint.config import Settings, secret
from cardmint.errors import CardmintError, UsageError
from cardmint.ops.backups import backup, pitr, store
from cardmint.ops.drills import frame
from cardmint.ops.drills.frame import plain
from cardmint.ops.drills.probe import prepare_probe_table
from cardmint.ops.health.report import check_health

WARMUP_WRITES = 50
WRITE_AFTER_BACKUP_S = 2.0
# A write counts as archived when the archive ends at least this far past its WAL
# position: its commit record follows the row within a few dozen bytes.
COMMIT_MARGIN = 1024
INSERT_SQL = ("INSERT INTO drill.probe (run, id, timeline) VALUES ($1, $2, 0) "
              "RETURNING pg_current_wal_insert_lsn()::text")


@dataclass
class Writer:
    """Sequential inserts on one connection; `acks`: (id, monotonic time, WAL position)."""

    conn: asyncpg.Connection
    run: str
    acks: list[tuple[int, float, int]] = field(default_factory=list)
    errors: int = 0
    seg_size: int = 16 * 1024 * 1024
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                lsn = await self.conn.fetchval(INSERT_SQL, self.run, n)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                self.errors += 1  # the host is gone: this write was never acknowledged
                return
            self.acks.append((n, time.monotonic(), parse_lsn(lsn) or 0))
            await asyncio.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks) < count:
            if time.monotonic() > deadline:
                raise CardmintError(f"the drill's writer made {len(self.acks)} of {count} "
                                    f"writes in {timeout:.0f} s")
            await asyncio.sleep(0.01)


def segment_end(segment: str, seg_size: int) -> int:
    """The WAL position just past segment `segment` (TTTTTTTTXXXXXXXXYYYYYYYY)."""
    per = 0x1_0000_0000 // seg_size
    number = int(segment[8:16], 16) * per + int(segment[16:24], 16)
    return (number + 1) * seg_size


async def drill(settings: Settings, *, repo: int | None = None,
                write_after_backup_s: float = WRITE_AFTER_BACKUP_S) -> dict[str, Any]:
    """The drill on the local engine; the report (also stored in `drills` on the restored
    primary and as Markdown under `$CARDMINT_HOME/drills/`)."""
    if engine_of(settings) != "local":
        raise UsageError("the restore drill runs on the local engine (it deletes the host's "
                         "data directories)")
    s = store.site(settings)
    remote = [r.index for r in backrest.repos(s.home)]
    if not remote:
        raise UsageError("the restore drill needs a repository off this host (repo2: a "
                         "repository host or object storage); this cluster has only repo1")
    if repo is None:
        repo = remote[0]
    elif repo not in remote:
        raise UsageError(f"--repo {repo}: the repositories off this host are "
                         f"{', '.join(map(str, remote))}")
    started_at = datetime.now(UTC)
    run = uuid.uuid4().hex[:12]
    report: dict[str, Any] = {
        "ok": False, "kind": "restore", "provider": "local", "repo": repo, "run": run,
        "started_at": started_at, "backup_id": None, "acknowledged_writes": 0,
        "lost_writes": None, "lost_archived_writes": None, "rpo_s": None,
        "recovery_s": None, "restore_s": None, "last_archived_segment": None,
        "restored_node": None, "health": None, "error": None,
    }
    await prepare_probe_table(settings)
    conn = await asyncpg.connect(secret(settings.database_url), timeout=10)
    writer = Writer(conn, run)
    writer.seg_size = int(await conn.fetchval(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"))
    task = asyncio.create_task(writer.loop())
    lost_at: float | None = None
    try:
        await writer.wait_for(WARMUP_WRITES)
        made = await backup.create(settings, kind="incr", repo=repo)
        report["backup_id"] = made["id"]
        report["backup_type"] = made["type"]
        await asyncio.sleep(write_after_backup_s)  # the writes the host's loss may cost
        lost_at = time.monotonic()
        report["lost_host"] = await _lose_host(s)
        writer.stop()
        await asyncio.gather(task, return_exceptions=True)
        info = s.info(f"--repo={repo}")
        segments = [a.get("max") for a in info.get("archive", []) if a.get("max")]
        last = max(segments, key=lambda seg: seg[8:] + seg[:8]) if segments else None
        report["last_archived_segment"] = last
        fresh_dir = s.home / "fresh-host" / run / "data"
        restore_began = time.monotonic()
        restored = await pitr.restore(settings, to=fresh_dir, latest=True, repo=repo,
                                      primary_gone=True, repoint=True)
        report["restore"] = {k: restored.get(k) for k in (
            "ok", "backup_id", "node", "port", "promoted_s", "duration_s", "steps",
            "repointed", "warnings")}
        report["repoint_s"] = (restored.get("repoint") or {}).get("duration_s")
        report["restored_node"] = restored["node"]
        report["restored_dir"] = str(fresh_dir)
        report["restore_s"] = restored["duration_s"]
        # from the loss to the restored primary's promotion (it accepts writes then)
        report["recovery_s"] = round(restore_began - lost_at + restored["promoted_s"], 3)
        report["recovery_verified_s"] = round(time.monotonic() - lost_at, 3)
        await _tally(refreshed(settings), writer, last, lost_at, report)
        health = await check_health(refreshed(settings))
        report["health"] = health.status
        report["health_findings"] = [f"{c['name']} {c['status']}: {c['detail']}"
                                     for c in health.to_dict()["checks"]
                                     if c["status"] != "ok"]
        report["ok"] = bool(restored["ok"] and report["lost_archived_writes"] == 0
                            and report["health"] != "critical")
    except CardmintError as exc:
        report["error"] = str(exc)
    finally:
        writer.stop()
        await asyncio.gather(task, return_exceptions=True)
        if not conn.is_closed():
            conn.terminate()
    report["finished_at"] = datetime.now(UTC)
    report["markdown"] = str(frame.write_markdown(s.home, report, kind="restore",
                                                    text=render_markdown(report)))
    report["id"] = await _store(refreshed(settings), report)
    return report


async def _lose_host(s: store.Site) -> dict[str, Any]:
    """SIGKILL every server of the cluster by PID, then delete what the host held: the
    data directories, repo1 and pgBackRest's spool."""
    state = load(s.home)
    assert state is not None
    killed = []
    for node in state.nodes:
        pid = process.postmaster_pid(Path(node.datadir))
        if pid is not None and process.alive(pid):
            os.kill(pid, signal.SIGKILL)
            killed.append({"node": node.name, "pid": pid})
    # the host's pgBackRest dies with it: what its async archive-push still held is lost
    killed += [{"node": "pgbackrest archive-push:async", "pid": pid}
               for pid in await backrest.stop_async(s.home)]
    for node in state.nodes:
        await process.wait_gone(Path(node.datadir))
        shutil.rmtree(node.datadir, ignore_errors=True)
    shutil.rmtree(s.backups, ignore_errors=True)
    shutil.rmtree(backrest.Paths(s.home).root / "spool", ignore_errors=True)
    return {"killed": killed, "deleted": [n.datadir for n in state.nodes] +
            [str(s.backups), str(backrest.Paths(s.home).root / "spool")]}


async def _tally(settings: Settings, writer: Writer, last: str | None, lost_at: float,
                 report: dict[str, Any]) -> None:
    """Which acknowledged writes the restored primary has; those the archive covered
    must all be there."""
    conn = await asyncpg.connect(secret(settings.migration_url), timeout=10)
    try:
        present = {r["id"] for r in await conn.fetch(
            "SELECT id FROM drill.probe WHERE run = $1", writer.run)}
    finally:
        await conn.close()
    archived_end = segment_end(last, writer.seg_size) if last else 0
    acks = writer.acks
    missing = [(i, t, lsn) for i, t, lsn in acks if i not in present]
    covered_missing = [i for i, _, lsn in missing if lsn + COMMIT_MARGIN <= archived_end]
    kept = [t for i, t, _ in acks if i in present]
    report["acknowledged_writes"] = len(acks)
    report["archived_end_lsn"] = _lsn_text(archived_end)
    report["last_ack_lsn"] = _lsn_text(acks[-1][2]) if acks else None
    report["restored_writes"] = len(kept)
    report["lost_writes"] = len(missing)
    report["lost_archived_writes"] = len(covered_missing)
    report["lost_archived_ids"] = covered_missing[:20]
    report["archived_acknowledged_writes"] = sum(
        1 for _, _, lsn in acks if lsn + COMMIT_MARGIN <= archived_end)
    last_ack = max((t for _, t, _ in acks), default=None)
    last_kept = max(kept, default=None)
    # RPO in time: how much of the writing before the loss is gone
    report["rpo_s"] = None if last_ack is None else round(
        last_ack - last_kept if last_kept is not None else last_ack - acks[0][1], 3)
    report["writes_after_loss"] = sum(1 for _, t, _ in acks if t > lost_at)


def _lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


async def _store(settings: Settings, report: dict[str, Any]) -> int | None:
    """Into `drills` on the restored primary (the old one is gone with its host)."""
    try:
        conn = await asyncpg.connect(secret(settings.migration_url), timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        return int(await conn.fetchval(
            "INSERT INTO drills (kind, started_at, finished_at, ok, report) "
            "VALUES ('restore', $1, $2, $3, $4::jsonb) RETURNING id",
            report["started_at"], report["finished_at"], report["ok"],
            json.dumps(plain(report))))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


def render_markdown(report: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "—" if value is None else (f"{value:.3f} s" if isinstance(value, float)
                                          else str(value))

    lines = [
        f"# Restore drill {report['started_at']:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"**Result: {'PASS' if report['ok'] else 'FAIL'}** — the database host was lost "
        f"(data directories, repo1, spool) and restored from repo{report['repo']} alone.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Backup taken under load | {fmt(report['backup_id'])} "
        f"({report.get('backup_type', '—')}) |",
        f"| Last archived segment | {fmt(report['last_archived_segment'])} |",
        f"| Recovery time (loss to writes accepted) | {fmt(report['recovery_s'])} |",
        f"| Restore command (restore, replay, verify, repoint) | {fmt(report['restore_s'])} |",
        f"| Acknowledged writes | {report['acknowledged_writes']} |",
        f"| ... covered by the archive | {report.get('archived_acknowledged_writes', '—')} |",
        f"| ... of those lost | {fmt(report['lost_archived_writes'])} |",
        f"| Writes lost (RPO, count) | {fmt(report['lost_writes'])} |",
        f"| RPO (time) | {fmt(report['rpo_s'])} |",
        f"| Restored primary | {fmt(report['restored_node'])} |",
        f"| Health after | {fmt(report['health'])} |",
    ]
    if report.get("error"):
        lines += ["", f"Error: {report['error']}"]
    return "\n".join(lines) + "\n"


