"""The runbook's security procedures: the monthly audit (`audit.py`) and the quarterly
credential rotation, whose steps differ by engine: `rotate.py` where CardMint runs the
nodes (local, Patroni), `fly.py` on Fly (flyctl secrets for the application)."""

from __future__ import annotations

from datetime import datetime

from cardmint.cluster.provider import engine_of
from cardmint.config import Settings
from cardmint.ops.security import fly
from cardmint.ops.security import rotate as managed
from cardmint.ops.security.rotate import RotateReport


async def rotate(settings: Settings, roles: list[str] | None = None, *, force: bool = False,
                 show: bool = False, now: datetime | None = None) -> RotateReport:
    """Rotate `roles` on this cluster's engine (the one chooser of this chapter)."""
    if engine_of(settings) == "fly":
        return await fly.rotate_fly(settings, roles, force=force, show=show, now=now)
    return await managed.rotate(settings, roles, force=force, show=show, now=now)
