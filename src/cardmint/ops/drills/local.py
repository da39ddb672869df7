"""The failover drill on the local engine: the primary's postmaster SIGKILLed by PID, the
loss detected by polling that PID (and the port), the replica with the most WAL promoted
(`cluster failover`, on connections opened beforehand), then the checks and the old
primary's rejoin. The probe, tally and report are the frame's (`frame.py`)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.local import LocalCluster
from cardmint.cluster.pg import process
from cardmint.cluster.state import ClusterState, Node
from cardmint.config import Settings
from cardmint.errors import ClusterError
from cardmint.ops.drills.frame import Drill, run_drill
from cardmint.ops.drills.probe import RECOVERY_TIMEOUT_S

DETECT_POLL_S = 0.002
PORT_CHECK_EVERY = 5  # polls: the PID is the cheap signal, the port the remote one


async def drill(settings: Settings) -> dict[str, Any]:
    """The drill on the local engine (the design's JSON contract, and more)."""
    cluster = LocalCluster(settings)
    state = cluster.ready_state()
    status = await cluster.status()
    if not any(n.role == "replica" and n.state == "streaming" for n in status.nodes):
        raise ClusterError("no replica is streaming: a drill now would be a real outage")
    old = state.primary
    pid = process.postmaster_pid(Path(old.datadir))
    if pid is None:
        raise ClusterError(f"the primary {old.name} is not running")
    return await run_drill(settings, provider=cluster.provider, old_primary=old.name,
                           sync=state.sync, home=cluster.home,
                           exercise=functools.partial(_exercise, cluster, state, pid))


async def wait_for_loss(node: Node, pid: int, timeout: float = RECOVERY_TIMEOUT_S) -> str:
    """Poll until the primary is gone: its postmaster PID dead, or its port refusing."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        if not process.alive(pid):
            return "pid"
        polls += 1
        if polls % PORT_CHECK_EVERY == 0:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(node.host, node.port), 0.5)
                writer.close()
            except (OSError, TimeoutError):
                return "port"
        if time.monotonic() > deadline:
            raise ClusterError(f"{node.name} still alive {timeout:.0f} s after SIGKILL")
        await asyncio.sleep(DETECT_POLL_S)


async def _exercise(cluster: LocalCluster, state: ClusterState, pid: int, d: Drill) -> None:
    """SIGKILL the primary's postmaster, detect, promote the best replica, check, rejoin."""
    old = state.primary
    conns: dict[str, asyncpg.Connection] = {}
    try:
        for node in state.replicas:  # opened now, so promotion pays no connect time
            conns[node.name] = await cluster.admin.connect(node, "postgres", timeout=3)

        d.killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        d.report["detected_by"] = await wait_for_loss(old, pid)
        detected_at = time.monotonic()
        d.report["detection_s"] = round(detected_at - d.killed_at, 4)

        failover = await cluster.failover(conns=conns)
        d.report["promotion_s"] = round(time.monotonic() - detected_at, 4)
        d.report["new_primary"] = failover.new_primary
        d.report["timeline"] = failover.timeline
        d.report["failover"] = failover.to_dict()
        d.report["in_recovery_after"] = await conns[failover.new_primary].fetchval(
            "SELECT pg_is_in_recovery()")
        await d.check_and_rejoin(lambda: cluster.rejoin(old.name))
    finally:
        for conn in conns.values():
            await conn.close()


