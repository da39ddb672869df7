"""Which backups to keep, and when the next one is due: functions of the backups and a
clock, so the rules are tested without waiting a week."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Plan:
    keep: list[str]  # backup ids, newest first
    drop: list[str]
    # The oldest kept backup's id: archived WAL before its start segment can go.
    oldest_kept: str | None


def plan(backups: dict[str, datetime], now: datetime, *, retention: timedelta,
         min_keep: int) -> Plan:
    """Keep every backup started within `retention` of `now`, and never fewer than
    `min_keep`: when too few are recent, the newest older ones stay too."""
    newest_first = sorted(backups, key=lambda b: backups[b], reverse=True)
    keep = [b for b in newest_first if backups[b] >= now - retention]
    for b in newest_first:
        if len(keep) >= min_keep:
            break
        if b not in keep:
            keep.append(b)
    keep.sort(key=lambda b: backups[b], reverse=True)
    drop = [b for b in newest_first if b not in keep]
    return Plan(keep=keep, drop=drop, oldest_kept=keep[-1] if keep else None)


def due(latest_started_at: datetime | None, now: datetime, interval: timedelta) -> bool:
    """A scheduled backup is due when there is none or the newest is `interval` old."""
    return latest_started_at is None or now - latest_started_at >= interval
