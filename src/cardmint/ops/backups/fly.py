"""Storage and backups on Fly, where they are volumes and volume snapshots (the runbook's
"Storage Issues" and "Data Recovery" sections). `cardmint storage`, `storage extend` and
`backup create|list|restore` call these when CARDMINT_PROVIDER=fly."""

from __future__ import annotations

from typing import Any

from cardmint.cluster.fly.engine import FlyCluster, primary_id, role_of
from cardmint.errors import ClusterError, UsageError


async def volumes(fly: FlyCluster) -> dict[str, Any]:
    """Each volume with its size and the machine (and role) it is attached to. flyctl
    reports no usage: `cardmint health` measures that on the database itself."""
    vols, machines = await fly.volumes(), await fly.machines()
    roles = {m.get("id"): role_of(m) for m in machines}
    return {"provider": fly.provider, "app": fly.app, "volumes": [
        {"id": v.get("id"), "name": v.get("name"), "size_gb": v.get("size_gb"),
         "region": v.get("region"), "machine": v.get("attached_machine_id"),
         "role": roles.get(v.get("attached_machine_id"))} for v in vols]}


async def extend(fly: FlyCluster, volume_id: str, size_gb: int) -> dict[str, Any]:
    """Grow a volume (Fly volumes only grow): the runbook's answer to storage > 90 %."""
    current = next((v for v in await fly.volumes() if v.get("id") == volume_id), None)
    if current is None:
        raise UsageError(f"no volume {volume_id} in {fly.app}")
    if size_gb <= int(current.get("size_gb") or 0):
        raise UsageError(f"--size-gb must be more than the volume's {current['size_gb']} GB: "
                         "Fly volumes only grow")
    out = await fly.extend_volume(volume_id, size_gb)
    return {"provider": fly.provider, "volume": volume_id, "size_gb_before":
            current.get("size_gb"), "size_gb": out.get("size_gb", size_gb)}


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

