"""The runbook's backups and recovery: pgBackRest backups with a catalog (`backup.py`,
`records.py`, `store.py`: pgBackRest underneath), retention, point-in-time restore
(`restore*.py`) and making a restored copy the primary (`repoint.py`); on Fly, volume
snapshots (`fly.py`). The functions below are this chapter's one chooser: what differs by
engine goes through them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.provider import engine_of
from cardmint.config import Settings
from cardmint.errors import UsageError
from cardmint.ops.backups import backup, fly, pitr


def _on_fly(settings: Settings) -> FlyCluster | None:
    return FlyCluster.from_settings(settings) if engine_of(settings) == "fly" else None


async def create(settings: Settings, *, max_rate: str | None = None, diff: bool = False,
                 incr: bool = False, repo: int | None = None) -> dict[str, Any]:
    """A pgBackRest backup of the primary now (on Fly: a snapshot of its volume)."""
    if diff and incr:
        raise UsageError("give --diff or --incr, not both")
    on_fly = _on_fly(settings)
    if on_fly is not None:
        if max_rate is not None or diff or incr or repo is not None:
            raise UsageError("on Fly, backup create takes no --max-rate, --diff, --incr or "
                             "--repo (Fly snapshots the volume itself)")
        return await fly.snapshot(on_fly)
    kind = "diff" if diff else "incr" if incr else "full"
    return await backup.create(settings, max_rate=max_rate, kind=kind, repo=repo)


async def list_backups(settings: Settings) -> dict[str, Any]:
    """Backups newest first (on Fly: every volume's snapshots)."""
    on_fly = _on_fly(settings)
    if on_fly is not None:
        return await fly.snapshots(on_fly)
    return await backup.list_backups(settings)


async def restore(settings: Settings, *, backup_id: str | None = None, to: Path | None = None,
                  to_app: str | None = None, target_time: str | None = None,
                  target_lsn: str | None = None, latest: bool = False,
                  port: int | None = None, repoint: bool = False,
                  repo: int | None = None) -> dict[str, Any]:
    """Point-in-time restore into a new cluster, verified; on Fly a new Postgres app made
    from a volume snapshot."""
    on_fly = _on_fly(settings)
    if on_fly is not None:
        if not to_app or not backup_id or to or target_time or target_lsn or latest or repoint \
                or repo is not None:
            raise UsageError("on Fly, restore takes a snapshot ID and --to-app NEW_APP only "
                             "(Fly restores whole volumes, not to a moment)")
        return await fly.restore(settings, on_fly, backup_id, to_app)
    if to is None or to_app is not None:
        raise UsageError("restore needs --to DIRECTORY (--to-app is for Fly)")
    return await pitr.restore(settings, to=to, backup_id=backup_id,
                              target_time=target_time, target_lsn=target_lsn,
                              latest=latest, port=port, repoint=repoint, repo=repo)
