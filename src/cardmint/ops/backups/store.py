"""Backups on disk: `$CARDMINT_HOME/backups/<id>/`, their metadata, the lock a running
backup holds, and running PostgreSQL's client programs as the server's OS user.

A backup is written into `<id>.partial/` and renamed to `<id>/` only once it is complete
and described by `backup.json`, so a directory named like an id is always a whole
backup: restore never looks at anything else. The disk is the truth about which backups
exist; the `backups` table is their catalog (see backup_catalog.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cardmint.clock import utc
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import ClusterState, load
from cardmint.config import Settings
from cardmint.dsn import redact
from cardmint.errors import BackupError, UsageError

ID = re.compile(r"^\d{8}T\d{6}Z$")
META = "backup.json"
MANIFEST = "backup_manifest"
PARTIAL = ".partial"


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
        return self.home / "backups"

    @property
    def archive(self) -> Path:
        return self.home / "wal-archive"

    def final(self, backup_id: str) -> Path:
        return self.backups / backup_id

    def partial(self, backup_id: str) -> Path:
        return self.backups / (backup_id + PARTIAL)


def site(settings: Settings) -> Site:
    home = settings.home.resolve()
    state = load(home)
    if state is None:
        raise settings.no_cluster()
    user = OsUser.resolve(state.os_user or settings.pg_os_user)
    return Site(settings, home, state, PgBin(Path(state.bindir), state.pg_version), user)


def new_id(s: Site, now: datetime | None = None, taken: set[str] | frozenset[str] = frozenset(),
           ) -> str:
    """A UTC timestamp id, one second later if that one is taken (on disk or in `taken`,
    the ids the catalog holds: failed attempts keep theirs)."""
    moment = utc(now).replace(microsecond=0)
    while True:
        candidate = moment.strftime("%Y%m%dT%H%M%SZ")
        if candidate not in taken and not s.final(candidate).exists() \
                and not s.partial(candidate).exists():
            return candidate
        moment += timedelta(seconds=1)


def finished(s: Site) -> dict[str, dict[str, Any]]:
    """Every complete backup on disk, id to metadata."""
    out: dict[str, dict[str, Any]] = {}
    if not s.backups.is_dir():
        return out
    for entry in sorted(s.backups.iterdir()):
        if ID.match(entry.name) and (entry / META).is_file():
            try:
                out[entry.name] = json.loads((entry / META).read_text())
            except ValueError:
                continue  # unreadable metadata: not a backup restore may trust
    return out


def partials(s: Site) -> list[Path]:
    if not s.backups.is_dir():
        return []
    return sorted(p for p in s.backups.iterdir()
                  if p.name.endswith(PARTIAL) and ID.match(p.name[: -len(PARTIAL)]))


def meta(s: Site, backup_id: str) -> dict[str, Any]:
    backups = finished(s)
    if backup_id not in backups:
        known = ", ".join(sorted(backups)) or "none"
        raise UsageError(f"no complete backup {backup_id!r} in {s.backups} (backups: {known})")
    return backups[backup_id]


def write_meta(directory: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".meta.")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, directory / META)


def publish(s: Site, backup_id: str) -> Path:
    """Rename the finished partial directory to its id: the one step that makes it a
    backup. The directory entry is synced so a crash cannot undo it."""
    final = s.final(backup_id)
    s.partial(backup_id).rename(final)
    fd = os.open(s.backups, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def size_of(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except FileNotFoundError:
                continue
    return total


def read_manifest(directory: Path) -> dict[str, Any]:
    """LSNs, timeline and the data size from the backup_manifest pg_basebackup wrote."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {directory / MANIFEST}: {exc}") from exc
    ranges = manifest.get("WAL-Ranges") or []
    if not ranges:
        raise BackupError(f"{directory / MANIFEST} names no WAL range")
    return {
        "timeline": int(ranges[0]["Timeline"]),
        "start_lsn": ranges[0]["Start-LSN"],
        "end_lsn": ranges[-1]["End-LSN"],
        "end_timeline": int(ranges[-1]["Timeline"]),
        "data_bytes": sum(int(f.get("Size", 0)) for f in manifest.get("Files", [])),
    }


@contextmanager
def locked(s: Site) -> Iterator[int | None]:
    """The backup lock, without waiting: yields its file descriptor, or None when another
    backup holds it. A running pg_basebackup inherits the descriptor, so the lock stays
    held while that program lives even if the command that started it was killed."""
    s.backups.mkdir(parents=True, exist_ok=True)
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


async def extract(s: Site, backup_id: str, dest: Path) -> None:
    """Unpack a backup into `dest` (which the OS user owns): the data directory from
    base.tar[.zst], the WAL streamed during the backup into pg_wal."""
    source = s.final(backup_id)
    archives = sorted(p.name for p in source.iterdir() if ".tar" in p.name)
    base = next((a for a in archives if a.startswith("base.tar")), None)
    extra = [a for a in archives if not a.startswith(("base.tar", "pg_wal.tar"))]
    if base is None:
        raise BackupError(f"backup {backup_id} has no base.tar: it is incomplete")
    if extra:
        raise BackupError(f"backup {backup_id} has tablespaces ({', '.join(extra)}), "
                          "which restore does not handle")
    if "pg_wal.tar" not in archives:
        raise BackupError(f"backup {backup_id} has no pg_wal.tar: its WAL is missing")
    s.user.own(dest)
    unzip = ["--use-compress-program=zstd"] if base.endswith(".zst") else []
    await run(s.user, ["tar", "-x", "-f", str(source / base), *unzip, "-C", str(dest)])
    s.user.own(dest / "pg_wal")
    await run(s.user, ["tar", "-x", "-f", str(source / "pg_wal.tar"), "-C",
                       str(dest / "pg_wal")])


async def await_archived(archive: Path, segment: str, timeout: float) -> bool:
    """Until `segment` is in the archive (the archive command renames it into place
    whole), or False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (archive / segment).exists():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def zstd_available() -> bool:
    return shutil.which("zstd") is not None
