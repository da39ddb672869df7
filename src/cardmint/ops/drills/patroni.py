"""The failover drill's middle on the Patroni engine: a lost host, and Patroni's own
failover.

"Killing the primary" SIGKILLs both the leader's Patroni and its postmaster, as if the
host had gone: nobody releases the leader key, so the survivors wait for it to expire
(the DCS ttl). Detection is the moment the surviving member's REST API no longer names
the old leader; promotion runs from there until `pg_is_in_recovery()` is false on the
new leader; rejoin starts the old member's Patroni again, which rewinds it and follows
the new leader. The probe, health, test-card, tally and report are drill.py's.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.engine import FailoverReport
from cardmint.cluster.handover import POSITION_SQL
from cardmint.cluster.patroni import PatroniCluster, conf, rest
from cardmint.cluster.pg import process
from cardmint.cluster.pg.admin import one_row
from cardmint.cluster.state import ClusterState
from cardmint.config import Settings
from cardmint.errors import ClusterError
from cardmint.ops.drills.frame import Drill, run_drill

DETECT_POLL_S = 0.02
PROMOTE_POLL_S = 0.005
# The leader key outlives a dead leader by up to the ttl; then a loop or two, and margin.
LEADER_TIMEOUT_S = conf.TTL_S + 30.0


async def drill(settings: Settings) -> dict[str, Any]:
    """The drill on the Patroni engine: a lost host, and Patroni's own failover."""
    cluster, state = await prepare(settings)
    status = await cluster.status()
    if not any(n.role == "replica" and n.state == "streaming" for n in status.nodes):
        raise ClusterError("no replica is streaming: a drill now would be a real outage")
    old = state.primary
    pid = process.postmaster_pid(Path(old.datadir))
    if pid is None:
        raise ClusterError(f"the primary {old.name} is not running")
    return await run_drill(settings, provider=cluster.provider, old_primary=old.name,
                           sync=state.sync, home=cluster.home,
                           exercise=functools.partial(exercise, cluster, state, pid))


async def prepare(settings: Settings) -> tuple[PatroniCluster, ClusterState]:
    """The cluster, with cluster.json naming Patroni's leader as the primary now."""
    cluster = PatroniCluster(settings)
    found = await cluster.refresh_members()
    state = cluster.ready_state()
    if state.sync and not any(m.role == "sync_standby" and m.state == "streaming"
                              for m in found.values()):
        # Patroni promotes only the standby it recorded as synchronous: none, no failover
        raise ClusterError("Patroni has no synchronous standby recorded: a drill now would be "
                           "a real outage (`cardmint cluster status`)")
    return cluster, state


async def wait_leader_change(cluster: PatroniCluster, state: ClusterState, old: str,
                             timeout: float = LEADER_TIMEOUT_S) -> tuple[float, str]:
    """(when the survivors stopped naming `old` the leader, the new leader's name)."""
    ports = [cluster.rest_port(state, n.name) for n in state.nodes if n.name != old]
    deadline = time.monotonic() + timeout
    detected_at = None
    while True:
        for port in ports:
            try:
                found = rest.members(await rest.get(port, "/cluster", timeout=1.0))
            except ClusterError:
                continue
            lead = rest.leader(found)
            if lead != old:
                detected_at = detected_at or time.monotonic()
                if lead is not None:
                    return detected_at, lead
            break
        if time.monotonic() > deadline:
            raise ClusterError(f"Patroni still names {old} the leader {timeout:.0f} s after "
                               "it was killed")
        await asyncio.sleep(DETECT_POLL_S)


async def _writable(conn: asyncpg.Connection, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT pg_is_in_recovery()"):
        if time.monotonic() > deadline:
            raise ClusterError(f"the new leader still in recovery after {timeout:.0f} s")
        await asyncio.sleep(PROMOTE_POLL_S)


async def exercise(cluster: PatroniCluster, state: ClusterState, pid: int,
                   d: Drill) -> None:
    """Kill the leader's host, time Patroni's failover, check, rejoin (`run_drill` runs
    the probe around it)."""
    old = state.primary
    conns: dict[str, asyncpg.Connection] = {}
    try:
        patroni_pid = cluster.patroni_pid(old.name)
        if patroni_pid is None:
            raise ClusterError(f"the leader {old.name}'s Patroni is not running")
        for node in state.replicas:  # opened now, so timing the promotion pays no connect
            conns[node.name] = await cluster.admin.connect(node, "postgres", timeout=3)

        d.killed_at = time.monotonic()
        os.kill(patroni_pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        d.report["detected_by"] = "patroni"
        detected_at, new = await wait_leader_change(cluster, state, old.name)
        d.report["detection_s"] = round(detected_at - d.killed_at, 4)
        conn = conns[new]
        await _writable(conn)
        d.report["promotion_s"] = round(time.monotonic() - detected_at, 4)
        row = await one_row(conn, POSITION_SQL)
        d.report["new_primary"] = new
        d.report["timeline"] = row["timeline"]
        d.report["failover"] = FailoverReport(
            kind="failover", old_primary=old.name, new_primary=new,
            old_primary_was_running=True, stop_mode="SIGKILL (Patroni and postmaster)",
            fenced=False, timeline=row["timeline"], lsn=row["lsn"],
            timings_s={"promote": d.report["promotion_s"]}).to_dict()
        d.report["in_recovery_after"] = await conn.fetchval("SELECT pg_is_in_recovery()")
        await cluster.refresh()  # cluster.json names the new leader: the checks follow
        await d.check_and_rejoin(lambda: cluster.rejoin(old.name))
    finally:
        for c in conns.values():
            await c.close()
