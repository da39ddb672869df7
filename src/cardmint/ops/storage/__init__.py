"""The runbook's storage procedures: usage against the thresholds, the largest relations,
bloat and VACUUM (`usage.py`); on Fly, its volumes (`fly.py`). `report` and `extend` are
this chapter's one chooser."""

from __future__ import annotations

from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.provider import engine_of
from cardmint.config import Settings
from cardmint.errors import UsageError
from cardmint.ops.storage import fly, usage


async def report(settings: Settings) -> dict[str, Any]:
    """Disk usage and the largest relations (on Fly: its volumes and what they hold)."""
    if engine_of(settings) == "fly":
        return await fly.volumes(FlyCluster.from_settings(settings))
    return await usage.report(settings)


async def extend(settings: Settings, volume: str, size_gb: int) -> dict[str, Any]:
    """Grow the database's disk: a Fly volume; elsewhere the machine's own disk."""
    if engine_of(settings) != "fly":
        raise UsageError("storage extend grows a Fly volume; the local engine's disk is this "
                         "machine's: free space or move CARDMINT_HOME")
    return await fly.extend(FlyCluster.from_settings(settings), volume, size_gb)
