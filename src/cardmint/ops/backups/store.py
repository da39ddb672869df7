"""Backups as pgBackRest keeps them: the cluster home's repositories, what `info` says
about them (one metadata dict per backup, keyed by our id), the lock a running backup
holds, and running client programs as the server's OS user.

pgBackRest is the truth about which backups exist (it writes a backup's manifest last,
so an interrupted one is never listed, and resumes or removes it on the next run); the
`backups` table is the catalog of attempts (see records.py). A backup carries our id as
its annotation `cardmint-id`.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cardmint.clock import utc
from cardmint.cluster.pg import backrest
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import ClusterState, load
from cardmint.config import Settings
from cardmint.dsn import redact
from cardmint.errors import BackupError, ClusterError, UsageError

ID = re.compile(r"^\d{8}T\d{6}Z$")
ANNOTATION = "cardmint-id"


@dataclass
class Site:
    """The local cluster a backup is taken from and restored next to."""

    settings: Settings
    home: Path
    state: ClusterState
    pg: PgBin
    user: OsUser

    @property
    def backups(self) -> Path:
        """repo1 (and the lock file of a running backup)."""
        return self.home / "backups"

    @property
    def archive(self) -> Path:
        """pgBackRest's directory: configuration, spool, locks, log."""
        return self.home / "pgbackrest"

    def configure(self) -> None:
        """pgBackRest's configuration for today's primary (a failover moves it)."""
        primary = self.state.primary
        backrest.write_config(self.home, self.settings.secrets_path, self.user,
                              backrest.Pg(primary.datadir, primary.port),
                              retention_full_days=max(1, math.ceil(
                                  self.settings.backup_retention_days)))

    def info(self, *options: str) -> dict[str, Any]:
        try:
            return backrest.info(self.home, self.user, *options)
        except ClusterError as exc:
            raise BackupError(f"pgbackrest info failed: {exc}") from exc


def site(settings: Settings) -> Site:
    home = settings.home.resolve()
    state = load(home)
    if state is None:
        raise settings.no_cluster()
    user = OsUser.resolve(state.os_user or settings.pg_os_user)
    return Site(settings, home, state, PgBin(Path(state.bindir), state.pg_version), user)


def finished(s: Site, info: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every complete backup pgBackRest lists, our id to its metadata (the contract's
    fields: id, started_at, finished_at, LSNs, timeline, sizes; and label, type, repo)."""
    if info is None:
        if not backrest.Paths(s.home).conf.exists():
            return {}
        info = s.info()
    out: dict[str, dict[str, Any]] = {}
    for b in info.get("backup", []):
        meta = describe(b)
        out.setdefault(meta["id"], meta)  # the same backup in two repositories: the first
    return out


def describe(b: dict[str, Any]) -> dict[str, Any]:
    """One `info` backup entry as our metadata."""
    started = datetime.fromtimestamp(b["timestamp"]["start"], UTC)
    finished_at = datetime.fromtimestamp(b["timestamp"]["stop"], UTC)
    backup_id = (b.get("annotation") or {}).get(ANNOTATION) or started.strftime(
        "%Y%m%dT%H%M%SZ")
    duration = max(b["timestamp"]["stop"] - b["timestamp"]["start"], 0)
    data_bytes = int(b["info"]["size"])
    delta = int(b["info"].get("delta", data_bytes))
    repo = int((b.get("database") or {}).get("repo-key", 1))
    return {
        "id": backup_id, "label": b["label"], "type": b["type"], "status": "ok",
        "started_at": started.isoformat(), "finished_at": finished_at.isoformat(),
        "start_lsn": b["lsn"]["start"], "end_lsn": b["lsn"]["stop"],
        "timeline": int(b["archive"]["start"][:8], 16),
        "start_segment": b["archive"]["start"], "end_segment": b["archive"]["stop"],
        "size_bytes": int(b["info"]["repository"]["delta"]), "data_bytes": data_bytes,
        "delta_bytes": delta, "duration_s": float(duration),
        "throughput_mb_s": round(delta / 2**20 / max(duration, 1), 1),
        "compression": "zst", "encrypted": True, "repo": repo,
        "prior": b.get("prior"), "path": f"repo{repo}:{b['label']}",
    }


def meta(s: Site, backup_id: str) -> dict[str, Any]:
    backups = finished(s)
    if backup_id not in backups:
        known = ", ".join(sorted(backups)) or "none"
        raise UsageError(f"no complete backup {backup_id!r} (backups: {known})")
    return backups[backup_id]


def new_id(s: Site, now: datetime | None = None, taken: set[str] | frozenset[str] = frozenset(),
           ) -> str:
    """A UTC timestamp id, one second later if that one is taken (`taken`: the ids the
    catalog and the repositories hold; failed attempts keep theirs)."""
    moment = utc(now).replace(microsecond=0)
    while True:
        candidate = moment.strftime("%Y%m%dT%H%M%SZ")
        if candidate not in taken:
            return candidate
        moment += timedelta(seconds=1)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def locked(s: Site) -> Iterator[int | None]:
    """The backup lock, without waiting: yields its file descriptor, or None when another
    backup holds it. A running pgbackrest inherits the descriptor, so the lock stays
    held while that program lives even if the command that started it was killed."""
    s.user.own(s.backups)  # 0700: repo1 is the server user's
    fd = os.open(s.backups / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def run(user: OsUser, argv: list[str], *, env: dict[str, str] | None = None,
              pass_fds: tuple[int, ...] = (), timeout: float | None = None,
              started: list[int] | None = None) -> str:
    """Run a client program as the server's OS user without blocking the event loop;
    its PID goes into `started`. Cancelled or timed out, it is killed by that PID.
    A failure raises BackupError with the program's redacted output."""
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    # Popen returns once the program is started; asyncio's subprocess API is avoided
    # because uvloop (the CLI's loop) does not take user= and group=.
    proc = subprocess.Popen(  # noqa: ASYNC220
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})}, cwd="/", pass_fds=pass_fds,
        start_new_session=True,  # a Ctrl-C meant for us must not hit it half-way
        user=user.uid if user.switching else None,
        group=user.gid if user.switching else None,
    )
    if started is not None:
        started.append(proc.pid)
    try:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    except BaseException as exc:
        proc.kill()
        await asyncio.to_thread(proc.wait)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise BackupError(f"{Path(argv[0]).name} ran past {timeout:.0f} s") from None
        raise
    if proc.returncode != 0:
        detail = redact((out or "").strip())[-1500:] or "(no output)"
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 \
            else f"exited {proc.returncode}"
        raise BackupError(f"{Path(argv[0]).name} {how}: {detail}")
    return out or ""




def archived(s: Site, segment: str) -> bool:
    """Is `segment` (or a timeline history file) in repo1? pgBackRest stores a segment as
    archive/<stanza>/<db>/<first 16 of its name>/<name>-<sha1>[.ext]: the name is readable
    even in an encrypted repository."""
    base = s.backups / "archive" / backrest.STANZA
    if segment.endswith(".history"):
        return any(base.glob(f"*/{segment}"))
    return any(base.glob(f"*/{segment[:16]}/{segment}-*"))


async def await_archived(s: Site, segment: str, timeout: float) -> bool:
    """Until `segment` is in repo1 (archive-push returns only once it is stored), or
    False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not archived(s, segment):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
