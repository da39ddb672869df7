"""`cardmint drill failover` on Fly: the runbook's monthly drill as it reads there
("flyctl machine kill [primary-machine-id]", then check the new primary).

The same measures as the local drill: the write probe goes through the application's own
`Database` (CARDMINT_DATABASE_URL: the .flycast address from inside Fly, or `flyctl proxy`
from a workstation); the primary's machine is killed with flyctl; detection is the first
machine list that shows it stopped, promotion the first that names another running primary
(Fly's HA picks it); then pg_is_in_recovery() on the new primary, health, test-card; the
killed machine is started again and must come back as a replica. flyctl answers in about a
second, so detection and promotion here are measured to flyctl's resolution; the write
outage, measured by the probe, is the figure that counts.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.engine import primary_id
from cardmint.config import Settings
from cardmint.errors import ClusterError
from cardmint.ops.drills.frame import Drill, run_drill

FLY_RECOVERY_TIMEOUT_S = 300.0  # Fly's HA needs its health checks to fail first
FLY_POLL_S = 0.5


async def drill(settings: Settings, *, fly: FlyCluster | None = None) -> dict[str, Any]:
    """Run the drill on the Fly app of CARDMINT_FLY_APP; the design's JSON contract."""
    fly = fly or FlyCluster.from_settings(settings)
    machines = await fly.machines()
    old = primary_id(machines)
    if old is None:
        raise ClusterError(f"{fly.app} has no running primary: a drill now would be a real "
                           "outage")
    if not any(m.get("id") != old and m.get("state") == "started" for m in machines):
        raise ClusterError(f"{fly.app} has no running replica: a drill now would be a real "
                           "outage")
    return await run_drill(settings, provider=fly.provider, old_primary=old, sync=None,
                           home=settings.home.resolve(),
                           exercise=functools.partial(_exercise, fly, old))


async def _exercise(fly: FlyCluster, old: str, d: Drill) -> None:
    d.report["detected_by"] = "flyctl machine list"
    d.killed_at = time.monotonic()
    await fly.kill_machine(old)
    machines = await _until(fly, lambda ms: any(m.get("id") == old and
                                               m.get("state") != "started" for m in ms),
                            f"machine {old} still runs after flyctl machine kill")
    detected_at = time.monotonic()
    d.report["detection_s"] = round(detected_at - d.killed_at, 4)
    machines = await _until(fly, lambda ms: primary_id(ms) not in (None, old),
                            f"Fly promoted no replica of {fly.app} after {old} was killed",
                            first=machines)
    d.report["promotion_s"] = round(time.monotonic() - detected_at, 4)
    d.report["new_primary"] = primary_id(machines)
    d.report["in_recovery_after"] = await d.probe.db.fetchval("SELECT pg_is_in_recovery()")
    await d.check_and_rejoin(lambda: fly.rejoin(old))


async def _until(fly: FlyCluster, done: Any, failure: str,
                 first: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Machine lists until `done(machines)`, within FLY_RECOVERY_TIMEOUT_S."""
    deadline = time.monotonic() + FLY_RECOVERY_TIMEOUT_S
    machines = first if first is not None else await fly.machines()
    while not done(machines):
        if time.monotonic() > deadline:
            raise ClusterError(failure)
        await asyncio.sleep(FLY_POLL_S)
        machines = await fly.machines()
    return machines
