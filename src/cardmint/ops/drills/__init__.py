"""The runbook's monthly failover drill, automated and measured.

`frame.py` runs what every engine shares (the write probe, checks, tally, report);
`local.py`, `patroni.py` and `fly.py` each kill, detect, promote and rejoin their way.
`failover_drill` is this chapter's one chooser, and holds the maintenance-window guard.
`restore.py` is the restore drill: the host lost, restored from the remote repository.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cardmint.cluster.provider import engine_of
from cardmint.config import Settings
from cardmint.ops.drills import fly, local, patroni, restore
from cardmint.ops.maintenance import require_window

VARIANTS = {"local": local.drill, "patroni": patroni.drill, "fly": fly.drill}


async def failover_drill(settings: Settings, *, force: bool = False,
                         now: datetime | None = None) -> dict[str, Any]:
    """Kill the primary under a write probe, promote, check, rejoin, on this engine; the
    design's JSON contract (`frame.CONTRACT`) and more."""
    require_window("the failover drill", force=force, now=now)
    return await VARIANTS[engine_of(settings)](settings)


async def restore_drill(settings: Settings, *, repo: int | None = None, force: bool = False,
                        now: datetime | None = None) -> dict[str, Any]:
    """Lose the database host, restore from the remote repository alone (restore.py)."""
    require_window("the restore drill", force=force, now=now)
    return await restore.drill(settings, repo=repo)
