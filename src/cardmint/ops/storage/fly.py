"""Storage on Fly, where it is volumes (the runbook's "Storage Issues"): `cardmint storage`
and `storage extend` come here when CARDMINT_PROVIDER=fly."""

from __future__ import annotations

from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.roles import role_of
from cardmint.errors import UsageError


async def volumes(fly: FlyCluster) -> dict[str, Any]:
    """Each volume with its size and the machine (and role) it is attached to. flyctl
    reports no usage: `cardmint health` measures that on the database itself."""
    vols, machines = await fly.volumes(), await fly.machines()
    roles = {m.id: role_of(m) for m in machines}
    return {"provider": fly.provider, "app": fly.app, "volumes": [
        {"id": v.id, "name": v.name, "size_gb": v.size_gb, "region": v.region,
         "machine": v.machine, "role": roles.get(v.machine or "")} for v in vols]}


async def extend(fly: FlyCluster, volume_id: str, size_gb: int) -> dict[str, Any]:
    """Grow a volume (Fly volumes only grow): the runbook's answer to storage > 90 %.
    Some machines see the new size only after a stop and start; flyctl says which."""
    current = next((v for v in await fly.volumes() if v.id == volume_id), None)
    if current is None:
        raise UsageError(f"no volume {volume_id} in {fly.app}")
    if size_gb <= current.size_gb:
        raise UsageError(f"--size-gb must be more than the volume's {current.size_gb} GB: "
                         "Fly volumes only grow")
    done = await fly.extend_volume(volume_id, size_gb)
    report: dict[str, Any] = {"provider": fly.provider, "volume": volume_id,
                              "machine": current.machine, "size_gb_before": current.size_gb,
                              "size_gb": done.size_gb, "needs_restart": done.needs_restart}
    if done.needs_restart:
        report["detail"] = (
            f"the file system grows only once machine {current.machine} is stopped and "
            f"started: for a replica `flyctl machine restart {current.machine} -a {fly.app}`; "
            "for the primary, `cardmint cluster switchover` first")
    return report
