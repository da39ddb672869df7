"""Storage on Fly, where it is volumes (the runbook's "Storage Issues"): `cardmint storage`
and `storage extend` come here when CARDMINT_PROVIDER=fly."""

from __future__ import annotations

from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.engine import role_of
from cardmint.errors import UsageError


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
