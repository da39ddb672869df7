"""What a restore will do, decided before anything is touched: the target, the backup it
starts from, and the recovery settings of the restored copy. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cardmint.cluster.pg import backrest
from cardmint.cluster.pg.nodes import conf_string
from cardmint.cluster.pg.probe import parse_lsn
from cardmint.errors import BackupError, UsageError

LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
# A restored copy must not act as the standby it was, nor wait for standbys it has not.
STALE = ("primary_conninfo", "primary_slot_name", "synchronous_standby_names")
# ... and must not carry an earlier restore's settings either.
RECOVERY = ("restore_command", "recovery_target", "recovery_target_time",
            "recovery_target_lsn", "recovery_target_action", "recovery_target_timeline",
            "recovery_target_inclusive", "archive_mode")


@dataclass(frozen=True)
class Target:
    kind: str  # immediate (the backup as it was) | time | lsn | latest (end of archive)
    time: datetime | None = None
    lsn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.time.isoformat() if self.time else self.lsn}


def target(target_time: datetime | str | None = None, target_lsn: str | None = None,
           latest: bool = False) -> Target:
    given = [k for k, v in (("--target-time", target_time), ("--target-lsn", target_lsn),
                            ("--latest", latest)) if v]
    if len(given) > 1:
        raise UsageError(f"give one recovery target, not {' and '.join(given)}")
    if target_time:
        moment = target_time
        if isinstance(moment, str):
            try:
                moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
            except ValueError:
                raise UsageError(f"--target-time {target_time!r} is not an ISO 8601 time") \
                    from None
        if moment.tzinfo is None:
            raise UsageError("--target-time needs a time zone (for example 2026-11-29T10:20:30Z)")
        return Target("time", time=moment)
    if target_lsn:
        if not LSN.match(target_lsn):
            raise UsageError(f"--target-lsn {target_lsn!r} is not an LSN like 0/3000060")
        return Target("lsn", lsn=target_lsn.upper())
    return Target("latest" if latest else "immediate")


def choose(backups: dict[str, dict[str, Any]], goal: Target,
           backup_id: str | None = None) -> dict[str, Any]:
    """The backup to start from: the one named, else the newest that ended before the
    target (recovery cannot stop before its backup's end)."""
    def ends_before(meta: dict[str, Any]) -> bool:
        if goal.kind == "time":
            assert goal.time is not None
            return datetime.fromisoformat(meta["finished_at"]) <= goal.time
        if goal.kind == "lsn":
            return (parse_lsn(meta["end_lsn"]) or 0) <= (parse_lsn(goal.lsn) or 0)
        return True

    if backup_id is not None:
        if backup_id not in backups:
            raise UsageError(f"no complete backup {backup_id!r}; backups: "
                              f"{', '.join(sorted(backups)) or 'none'}")
        meta = backups[backup_id]
        if not ends_before(meta):
            raise UsageError(f"backup {backup_id} ends after the target {goal.to_dict()['value']}"
                             ": choose an older backup, or none to pick one")
        return meta
    fitting = [m for m in backups.values() if ends_before(m)]
    if not fitting:
        raise BackupError("no backup ends before the target "
                          f"{goal.to_dict()['value'] or ''}: nothing to restore from".strip())
    return max(fitting, key=lambda m: m["started_at"])


def auto_conf(existing: str, goal: Target, archive: Path, repo: int | None = None) -> str:
    """postgresql.auto.conf for the restored copy: the stale replication settings and any
    earlier recovery settings gone; recovery from the archive to the target, promotion
    there, and archiving off (it must never write into the shared archive)."""
    keys = STALE + RECOVERY
    kept = [line for line in existing.splitlines()
            if line.split("=", 1)[0].strip() not in keys]
    fetch = backrest.restore_command(archive, repo)
    lines = [
        "# Written by `cardmint backup restore`: recover with pgBackRest's archive-get, "
        "then promote.",
        f"restore_command = {conf_string(fetch)}",
        "recovery_target_timeline = 'latest'",
        "archive_mode = 'off'",
    ]
    if goal.kind == "time":
        assert goal.time is not None
        lines.append(f"recovery_target_time = {conf_string(goal.time.isoformat())}")
    elif goal.kind == "lsn":
        lines.append(f"recovery_target_lsn = {conf_string(goal.lsn or '')}")
    elif goal.kind == "immediate":
        lines.append("recovery_target = 'immediate'")
    if goal.kind != "latest":
        lines.append("recovery_target_action = 'promote'")
    return "\n".join([*kept, *lines]) + "\n"
