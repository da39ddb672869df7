"""`cardmint drill failover` on Fly: the runbook's monthly drill, with a failure that is
one.

The runbook says `flyctl machine kill [primary-machine-id]`, but Fly Postgres machines
have restart policy `always` (flypg/launcher.go), so flyd starts a killed machine again
within seconds, long before repmgr gives up on it (about 60 s of an unreachable primary,
postgres-flex internal/flypg/repmgr.go): nothing fails over. The drill stops the
primary's machine instead, with SIGKILL (`flyctl machine stop ID --signal SIGKILL`): the
process dies as in a crash, and a stopped machine stays stopped. repmgr promotes only
with a majority of the members visible, so a flex cluster needs 3 machines for the drill
to mean anything; with fewer, or with two machines claiming primary, it is refused.

The same measures as the other drills: the write probe goes through the application's
own `Database` (CARDMINT_DATABASE_URL: the .flycast address from inside Fly, or `flyctl
proxy` from a workstation); detection is the first machine list that shows the primary
stopped, promotion the first that names another running primary whose role check passes
(Fly's cluster manager picks it, after its own ~60 s); then pg_is_in_recovery() on the
new primary, health, test-card; the stopped machine is started again and must come back
as a replica (a flex zombie first). The write outage, measured by the probe, is the
figure that counts.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.machines import Machine
from cardmint.cluster.fly.roles import REPLICA, primaries, primary_id, quorum_refusal, role_of
from cardmint.config import Settings
from cardmint.errors import ClusterError, UsageError
from cardmint.ops.drills.frame import Drill, run_drill

KILL_SIGNAL = "SIGKILL"


async def drill(settings: Settings, *, fly: FlyCluster | None = None) -> dict[str, Any]:
    """Run the drill on the Fly app of CARDMINT_FLY_APP; the design's JSON contract."""
    fly = fly or FlyCluster.from_settings(settings)
    machines = await fly.machines()
    old = primary_id(machines)  # two claiming primary: a ClusterError, nothing done
    if old is None:
        raise ClusterError(f"{fly.app} has no machine whose role check passes as primary: a "
                           "drill now would be a real outage")
    refusal = quorum_refusal(machines, "the failover drill")
    if refusal:
        raise UsageError(refusal)
    if not any(m.id != old and m.running and role_of(m) == REPLICA for m in machines):
        raise ClusterError(f"{fly.app} has no running replica: a drill now would be a real "
                           "outage")
    return await run_drill(settings, provider=fly.provider, old_primary=old, sync=None,
                           home=settings.home.resolve(),
                           exercise=functools.partial(_exercise, fly, old))


async def _exercise(fly: FlyCluster, old: str, d: Drill) -> None:
    d.report["detected_by"] = "flyctl machine list"
    d.report["stopped_with"] = f"flyctl machine stop --signal {KILL_SIGNAL}"
    d.killed_at = time.monotonic()
    await fly.stop_machine(old, KILL_SIGNAL)
    machines = await _until(fly, lambda ms: any(m.id == old and not m.running for m in ms),
                            f"machine {old} still runs after flyctl machine stop",
                            fly.waits.call_s)
    detected_at = time.monotonic()
    d.report["detection_s"] = round(detected_at - d.killed_at, 4)

    def promoted(ms: list[Machine]) -> bool:
        found = primaries(ms)
        if len(found) > 1:
            raise ClusterError(f"after {old} was stopped, {', '.join(found)} all claim "
                               "primary (a split brain): stop here and look")
        return bool(found) and found[0] != old

    machines = await _until(fly, promoted,
                            f"Fly promoted no replica of {fly.app} within "
                            f"{fly.waits.promotion_s:g} s of {old} being stopped",
                            fly.waits.promotion_s, first=machines)
    d.report["promotion_s"] = round(time.monotonic() - detected_at, 4)
    d.report["new_primary"] = primary_id(machines)
    d.report["in_recovery_after"] = await d.probe.db.fetchval("SELECT pg_is_in_recovery()")
    await d.check_and_rejoin(lambda: fly.rejoin(old))


async def _until(fly: FlyCluster, done: Callable[[list[Machine]], bool], failure: str,
                 within_s: float, first: list[Machine] | None = None) -> list[Machine]:
    """Machine lists until `done(machines)`, within `within_s`."""
    deadline = time.monotonic() + within_s
    machines = first if first is not None else await fly.machines()
    while not done(machines):
        if time.monotonic() > deadline:
            raise ClusterError(failure)
        await asyncio.sleep(fly.waits.poll_s)
        machines = await fly.machines()
    return machines
