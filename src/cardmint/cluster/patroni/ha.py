"""Failover, switchover and rejoin on the Patroni engine: CardMint asks, Patroni acts.

Failover and switchover POST to the candidate's REST API and time the promotion on a
connection to it (`pg_is_in_recovery()`), then wait until every running follower streams
again and, with synchronous replication, until Patroni has recorded a synchronous standby
in the DCS: only then would it fail over again without losing a commit. Rejoin starts the
member's Patroni, which rewinds a diverged old leader by itself (`use_pg_rewind`), and
asks Patroni to reinitialize it (a new base backup) when it does not stream in time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from cardmint.cluster.engine import FailoverReport, RejoinReport
from cardmint.cluster.handover import (
    POSITION_SQL,
    Timer,
    choose_target,
    lsn_text,
    probe_candidates,
)
from cardmint.cluster.patroni import rest
from cardmint.cluster.pg import process, replication
from cardmint.cluster.pg.admin import one_row
from cardmint.cluster.state import save
from cardmint.dsn import redact
from cardmint.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from cardmint.cluster.patroni.engine import PatroniCluster

PROMOTE_TIMEOUT_S = 60.0
REJOIN_TIMEOUT_S = 60.0  # before a rejoin falls back to reinitializing the member
MEMBERS_TIMEOUT_S = 120.0  # a reinitialized member: a base backup and a start


async def handover(cluster: PatroniCluster, kind: str, to: str | None) -> FailoverReport:
    """`kind` failover or switchover to `to`, or to the replica holding the most WAL."""
    timer = Timer()
    with cluster.lock():
        state = cluster.ready_state()
        previous = next((n.name for n in state.nodes if n.role == "primary"), None)
        found = await cluster.refresh_roles(state)
        old = rest.leader(found)
        if kind == "switchover" and old is None:
            raise ClusterError("the cluster has no leader: use `cardmint cluster failover`")
        if not state.replicas:
            raise ClusterError("the cluster has no replica to promote")
        candidates = await probe_candidates(cluster.admin, state.replicas)
        target = choose_target(candidates, to).name
        if kind == "switchover" and getattr(found.get(target), "state", None) != "streaming":
            raise ClusterError(f"{target} is not streaming: a switchover could lose writes")
        if (old or previous) is None:
            raise ClusterError("no leader, and cluster.json names no primary")
        old_node = state.node(old or previous)  # type: ignore[arg-type]
        was_running = process.postmaster_pid(Path(old_node.datadir)) is not None
        timer.lap("check")
        conn = await cluster.admin.connect(state.node(target), "postgres")
        try:
            body = {"candidate": target, **({"leader": old} if kind == "switchover" else {})}
            asked = asyncio.create_task(rest.post(cluster.rest_port(state, target), f"/{kind}",
                                                  body, cluster.rest_auth()))
            try:
                await _writable(conn, asked)
            except BaseException:
                asked.cancel()
                raise
            timer.lap("promote")
            code, text = await asked  # Patroni answers on its next second's poll
            if code != 200:
                raise ClusterError(f"Patroni: {kind} to {target}: {redact(text)}")
            timer.lap("patroni_answer")
            row = await one_row(conn, POSITION_SQL)
            await cluster.refresh_roles(state)
            cluster.record_pids(state)
            await asyncio.to_thread(save, state)
            timer.lap("save_state")
            running = [n.name for n in state.replicas if cluster.patroni_pid(n.name)]
            streaming = await replication.wait_streaming(conn, running, sync=state.sync,
                                                       timeout=REJOIN_TIMEOUT_S)
            if state.sync and streaming:
                await cluster.wait_members(state, sync=True, timeout=REJOIN_TIMEOUT_S,
                                         only=sorted(streaming))
            timer.lap("followers_streaming")
            sync_names = await conn.fetchval("SHOW synchronous_standby_names")
        finally:
            await conn.close()
    report = FailoverReport(
        kind=kind, old_primary=old_node.name, new_primary=target,
        old_primary_was_running=was_running,
        stop_mode="demoted by Patroni" if was_running else None, fenced=False,
        timeline=row["timeline"], lsn=row["lsn"],
        candidates={c.name: lsn_text(c.lsn) for c in candidates},
        repointed=sorted(streaming), not_streaming=[n for n in running if n not in streaming],
        sync_names=sync_names or None)
    if kind == "switchover":
        report.rejoin = RejoinReport(
            node=old_node.name, primary=target, method="demote", fallback_reason=None,
            set_aside=None, streaming=old_node.name in streaming, sync_names=sync_names,
            duration_s=timer.steps.get("followers_streaming", 0.0))
    report.timings_s, report.duration_s = timer.steps, timer.total()
    return report

async def rejoin(cluster: PatroniCluster, name: str) -> RejoinReport:
    """The member's Patroni started again (a crashed old leader is rewound by Patroni
    itself); if it does not stream within REJOIN_TIMEOUT_S, Patroni reinitializes it
    from the leader (a fresh base backup)."""
    began = time.monotonic()
    with cluster.lock():
        state = cluster.ready_state()
        try:
            node = state.node(name)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        found = await cluster.refresh_roles(state)
        lead = rest.leader(found)
        if lead is None:
            raise ClusterError("the cluster has no leader to rejoin")
        if lead == name:
            raise ClusterError(f"{name} is the leader; rejoin another member")
        user = process.OsUser.resolve(cluster.settings.pg_os_user)
        patroni, _ = cluster.programs(user)
        datadir = Path(node.datadir)
        if cluster.patroni_pid(name) is None:
            # a postmaster without its Patroni could be an old leader taking writes
            pid = process.postmaster_pid(datadir)
            if pid is not None:
                await process.stop(pid)
            await process.kill_leftovers(datadir)
            await process.wait_gone(datadir)
        offset = _size(cluster.patroni_log(name))
        cluster.start_member(user, state, name, patroni)
        conn = await cluster.admin.connect(state.node(lead), "postgres")
        try:
            method, reason = "restart", None
            if not await replication.wait_streaming(conn, [name], timeout=REJOIN_TIMEOUT_S):
                reason = f"not streaming after {REJOIN_TIMEOUT_S:.0f} s"
                method = "basebackup"
                code, text = await rest.post(cluster.rest_port(state, name), "/reinitialize",
                                             {"force": True}, cluster.rest_auth())
                if code != 200:
                    raise ClusterError(f"Patroni: reinitialize {name}: {redact(text)}")
                if not await replication.wait_streaming(conn, [name],
                                                      timeout=MEMBERS_TIMEOUT_S):
                    raise ClusterError(f"{name} does not stream after reinitializing: "
                                       f"{cluster.tail(name, 5)}")
            elif "pg_rewind" in _read_from(cluster.patroni_log(name), offset):
                method = "rewind"
            if state.sync:  # Patroni names it the synchronous standby within a loop
                await cluster.wait_members(state, sync=True, timeout=REJOIN_TIMEOUT_S,
                                         only=[name])
            sync_names = await conn.fetchval("SHOW synchronous_standby_names")
        finally:
            await conn.close()
        node.role = "replica"
        cluster.record_pids(state)
        save(state)
    return RejoinReport(node=name, primary=lead, method=method, fallback_reason=reason,
                        set_aside=None, streaming=True, sync_names=sync_names or None,
                        duration_s=round(time.monotonic() - began, 3))


async def _writable(conn: asyncpg.Connection, asked: asyncio.Task[tuple[int, str]],
                    timeout: float = PROMOTE_TIMEOUT_S) -> None:
    """Until the node on `conn` leaves recovery; early out if Patroni refused the request."""
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT pg_is_in_recovery()"):
        if asked.done() and asked.result()[0] != 200:
            raise ClusterError(f"Patroni refused: {redact(asked.result()[1])}")
        if time.monotonic() > deadline:
            raise ClusterError(f"the new leader still in recovery after {timeout:.0f} s")
        await asyncio.sleep(0.01)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""
