"""The runbook's scaling procedures, on whichever engine runs the cluster: vertical
scaling (a rolling resize, inside a maintenance window), read replicas, and PgBouncer
in front of the primary. The engines do the work; the guards live here, so a caller
from Python gets them as the CLI does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cardmint.cluster.engine import ReplicaReport, Report
from cardmint.cluster.provider import open_cluster
from cardmint.config import Settings
from cardmint.ops.maintenance import require_window


async def resize(settings: Settings, *, memory: str | None = None, cpu: int | None = None,
                 vm_size: str | None = None, force: bool = False,
                 now: datetime | None = None) -> Report:
    """Resize every node (replicas first, one switchover): disruptive, so only inside a
    maintenance window unless forced."""
    cluster = open_cluster(settings)
    require_window("resize", force=force, now=now)
    return await cluster.resize(memory=memory, cpu=cpu, vm_size=vm_size)


async def add_replica(settings: Settings, *, sync: bool = False) -> ReplicaReport:
    return await open_cluster(settings).add_replica(sync=sync)


async def remove_replica(settings: Settings, name: str) -> ReplicaReport:
    return await open_cluster(settings).remove_replica(name)


async def pooler(settings: Settings, action: str) -> dict[str, Any]:
    """PgBouncer before the primary: `up`, `down` or `status`."""
    return await open_cluster(settings).pooler(action)
