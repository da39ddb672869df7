"""Backups on Fly, where they are volume snapshots (the runbook's "Data Recovery"):
`backup create|list|restore` come here when CARDMINT_PROVIDER=fly."""

from __future__ import annotations

from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.engine import primary_id
from cardmint.errors import ClusterError, UsageError


async def snapshot(fly: FlyCluster) -> dict[str, Any]:
    """A snapshot of the primary's volume (its data is the cluster's)."""
    vols, machines = await fly.volumes(), await fly.machines()
    primary = primary_id(machines)
    vol = next((v for v in vols if v.get("attached_machine_id") == primary), None)
    if vol is None:
        raise ClusterError(f"no volume attached to the primary of {fly.app}")
    snap = await fly.snapshot_create(vol["id"])
    return {"provider": fly.provider, "volume": vol["id"], "machine": primary,
            "snapshot": snap}


async def snapshots(fly: FlyCluster) -> dict[str, Any]:
    """Every volume's snapshots, newest first."""
    out = []
    for vol in await fly.volumes():
        for snap in await fly.snapshots(vol["id"]):
            out.append({"volume": vol["id"], **snap})
    out.sort(key=lambda s: str(s.get("created_at") or ""), reverse=True)
    return {"provider": fly.provider, "app": fly.app, "snapshots": out}


async def restore(fly: FlyCluster, snapshot_id: str, new_app: str) -> dict[str, Any]:
    """A new Postgres app from a snapshot. flyctl's reply holds its connection string with a
    password, so it is dropped: a rotation gives the role a password we set ourselves."""
    known = {s.get("id") for s in (await snapshots(fly))["snapshots"]}
    if snapshot_id not in known:
        raise UsageError(f"no snapshot {snapshot_id} of {fly.app}'s volumes; "
                         "`cardmint backup list` shows them")
    return {"provider": fly.provider, **await fly.restore_from_snapshot(new_app, snapshot_id)}

