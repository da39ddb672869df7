"""Failover and switchover for the local engine.

Failover promotes the replica holding the most WAL, after fencing the old primary so that
it can never accept a write again:

- it is stopped by PID if it still runs (never two writable primaries, not even briefly);
- `standby.signal` is written into its data directory, so whoever starts it (`pg_ctl`,
  a reboot script) gets a read-only server in recovery with nothing to follow;
- the state marks it `fenced`: it leaves every DSN (the application's multi-host primary
  DSN lists the new primary first), `cluster up` does not start it, and only `cluster
  rejoin` (pg_rewind onto the new primary's history) makes it a node again.

Switchover is the planned version: the old primary stops cleanly (a fast shutdown streams
everything up to its shutdown checkpoint to the standbys), the target must have replayed
past that checkpoint before it is promoted, and the old primary rejoins at once. Nothing
acknowledged is lost.

Choosing the target is shared with the Patroni engine (`cluster/handover.py`).
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
    Candidate,
    Conns,
    Timer,
    choose_target,
    lsn_text,
    probe_candidates,
    promoted,
)
from cardmint.cluster.local import rejoin
from cardmint.cluster.pg import nodes, process, replication
from cardmint.cluster.pg.admin import one_row
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.probe import parse_lsn
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import REPLICATION, ClusterState, Node, save
from cardmint.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

PROMOTE_TIMEOUT_S = 60.0
REPLAY_TIMEOUT_S = 30.0
POLL_S = 0.002  # promotion takes tens of ms: poll finely (pg_promote(wait) polls at 100 ms)
RENUDGE_S = 0.025
SETTLE_TIMEOUT_S = 2.0


def controldata_fields(text: str) -> dict[str, str]:
    """pg_controldata's output as a dict ("Latest checkpoint location" -> "0/3000028")."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


# -- steps ---------------------------------------------------------------------------


async def settled_candidates(cluster: LocalCluster, state: ClusterState,
                             conns: Conns | None = None) -> list[Candidate]:
    """The replicas once none still streams from the old primary (all it sent is in, so
    the one chosen holds the most WAL for good), or at SETTLE_TIMEOUT_S."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        found = await probe_candidates(cluster.admin, state.replicas, conns)
        if not any(c.streaming for c in found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(POLL_S)


async def promote(conn: asyncpg.Connection, timeout: float = PROMOTE_TIMEOUT_S) -> None:
    """Promote the node `conn` is on and return once it accepts writes.

    pg_promote(wait => true) polls every 100 ms, so we poll ourselves. And we signal again
    every RENUDGE_S: a promote signal that lands while the startup process is between its
    trigger check and its sleep waits out wal_retrieve_retry_interval (seen here: 0.6 s
    instead of 0.05 s). A stale promote file is harmless: startup removes it."""
    deadline = time.monotonic() + timeout
    nudged = 0.0
    while True:
        if time.monotonic() - nudged > RENUDGE_S:
            nudged = time.monotonic()
            try:
                await conn.fetchval("SELECT pg_promote(wait => false)")
            except asyncpg.ObjectNotInPrerequisiteStateError:
                return  # "recovery is not in progress": done meanwhile
        if not await conn.fetchval("SELECT pg_is_in_recovery()"):
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"the promoted node still in recovery after {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


def fence(user: OsUser, node: Node) -> bool:
    """standby.signal in the old primary's directory: started again, it stays read-only."""
    datadir = Path(node.datadir)
    if not datadir.is_dir():
        return False  # the directory is gone: nothing there can start
    nodes.write(user, datadir / "standby.signal", "")
    return True


async def _promote_and_repoint(cluster: LocalCluster, state: ClusterState, old: Node,
                               target: Node, report: FailoverReport, timer: Timer,
                               conn: asyncpg.Connection) -> None:
    await promote(conn)
    timer.lap("promote")
    row = await one_row(conn, POSITION_SQL)
    report.timeline, report.lsn = row["timeline"], row["lsn"]
    promoted(state, target.name, old.name)
    # from here on every command finds the new primary (the application's multi-host
    # DSN already did); in a thread, so that its fsync does not stall the event loop
    await asyncio.to_thread(save, state)
    timer.lap("save_state")
    user = OsUser.resolve(cluster.settings.pg_os_user)
    password = cluster.passwords()[REPLICATION]
    others = state.replicas
    for node in others:
        await replication.ensure_slot(conn, node.slot)
        rejoin.standby_config(user, node, target, password, cluster.archive, stopped=False)
        if process.postmaster_pid(Path(node.datadir)) is None:
            continue  # it follows the new primary when it starts
        try:
            other = await cluster.admin.connect(node, "postgres", timeout=3)
        except ClusterError:
            continue
        try:
            # primary_conninfo is reloadable: its WAL receiver reconnects to the new
            # primary and follows the new timeline (it holds no more WAL than the target)
            await other.execute("SELECT pg_reload_conf()")
        finally:
            await other.close()
        report.repointed.append(node.name)
    streaming: set[str] = set()
    if report.repointed:
        streaming = await replication.wait_streaming(conn, report.repointed, timeout=15)
        report.not_streaming = [n for n in report.repointed if n not in streaming]
        timer.lap("repoint")
    report.sync_names = await rejoin.apply_sync(conn, state, streaming)


async def failover(cluster: LocalCluster, to: str | None = None, *,
                   conns: Conns | None = None) -> FailoverReport:
    """Promote a replica (`to`, or the one with the most WAL), fencing the old primary
    first. `conns`: open superuser connections to replicas, to save connect time."""
    timer = Timer()
    with cluster.lock():
        state = cluster.ready_state(ready=False)
        old = state.primary
        if not state.replicas:
            raise ClusterError("the cluster has no replica to promote")
        if to is not None:  # a wrong name or a dead node is refused before anything stops
            pre = await probe_candidates(cluster.admin, state.replicas, conns)
            choose_target([c for c in pre if c.name == to], to)
        user = OsUser.resolve(cluster.settings.pg_os_user)
        pid = process.postmaster_pid(Path(old.datadir))
        stop_mode = await process.stop(pid) if pid is not None else None
        leftovers = await process.kill_leftovers(Path(old.datadir))
        fenced = fence(user, old)
        timer.lap("fence")
        candidates = await settled_candidates(cluster, state, conns)
        try:
            target = state.node(choose_target(candidates, to).name)
        except ClusterError:
            if pid is not None:  # we stopped a working primary: it serves again
                (Path(old.datadir) / "standby.signal").unlink(missing_ok=True)
                pg = PgBin(Path(state.bindir), state.pg_version)
                old.pid = await cluster.start_node(pg, user, old)
            raise
        timer.lap("choose")
        report = FailoverReport(
            kind="failover", old_primary=old.name, new_primary=target.name,
            old_primary_was_running=pid is not None, stop_mode=stop_mode, fenced=fenced,
            leftovers_killed=leftovers, timeline=None, lsn=None,
            candidates={c.name: lsn_text(c.lsn) for c in candidates})
        conn = (conns or {}).get(target.name)
        owned = conn is None
        if conn is None:
            conn = await cluster.admin.connect(target, "postgres")
        try:
            await _promote_and_repoint(cluster, state, old, target, report, timer, conn)
        finally:
            if owned:
                await conn.close()
    report.timings_s, report.duration_s = timer.steps, timer.total()
    return report


# A clean stop archives the last segments first (archive_command, pgBackRest's
# archive-push, which waits for its asynchronous process up to its archive-timeout, 60 s):
# the promoted replica never archives what it received, so a segment left behind would be
# a gap in the archive. Wait that long for it before the immediate shutdown.
SWITCHOVER_STOP_S = 90.0


async def switchover(cluster: LocalCluster, to: str | None = None) -> FailoverReport:
    """Planned: stop the primary cleanly, check the target replayed its last WAL, promote
    it, and rejoin the old primary as a replica. Abandoned (old primary restarted as it
    was) if the target cannot be shown to hold everything."""
    timer = Timer()
    with cluster.lock():
        state = cluster.ready_state(ready=False)
        old = state.primary
        pid = process.postmaster_pid(Path(old.datadir))
        if pid is None:
            raise ClusterError(f"the primary {old.name} is not running: use "
                               "`cardmint cluster failover`")
        candidates = await probe_candidates(cluster.admin, state.replicas)
        target = state.node(choose_target(candidates, to).name)
        await _require_streaming(cluster, old, target)
        pg = PgBin(Path(state.bindir), state.pg_version)
        user = OsUser.resolve(cluster.settings.pg_os_user)
        conn = await cluster.admin.connect(target, "postgres")
        try:
            timer.lap("check")
            stop_mode = await process.stop(pid, timeout=SWITCHOVER_STOP_S)
            await process.wait_gone(Path(old.datadir))
            timer.lap("stop_old_primary")
            final = await _final_lsn(pg, user, old, stop_mode)
            if final is None or not await _replayed(conn, final):
                old.pid = await cluster.start_node(pg, user, old)
                save(state)
                raise ClusterError(
                    f"switchover abandoned: {target.name} could not be shown to hold "
                    f"{old.name}'s last WAL ({stop_mode} shutdown); {old.name} is the "
                    "primary again")
            timer.lap("wait_replay")
            fenced = fence(user, old)  # until it rejoins, below
            report = FailoverReport(
                kind="switchover", old_primary=old.name, new_primary=target.name,
                old_primary_was_running=True, stop_mode=stop_mode, fenced=fenced,
                timeline=None, lsn=None, final_lsn=lsn_text(final),
                candidates={c.name: lsn_text(c.lsn) for c in candidates})
            await _promote_and_repoint(cluster, state, old, target, report, timer, conn)
        finally:
            await conn.close()
        back = await rejoin.rejoin_node(cluster, state, old)
        save(state)
        report.rejoin = back
        report.sync_names = back.sync_names
        timer.lap("rejoin_old_primary")
    report.timings_s, report.duration_s = timer.steps, timer.total()
    return report


async def rejoin_named(cluster: LocalCluster, name: str) -> RejoinReport:
    """`cluster rejoin NODE`: the node back as a streaming replica of the primary."""
    with cluster.lock():
        state = cluster.ready_state(ready=False)
        try:
            node = state.node(name)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        report = await rejoin.rejoin_node(cluster, state, node)
        save(state)
    return report


async def _require_streaming(cluster: LocalCluster, primary: Node, target: Node) -> None:
    conn = await cluster.admin.connect(primary, "postgres", timeout=3)
    try:
        streams = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 "
            "AND state = 'streaming'", target.name)
    finally:
        await conn.close()
    if not streams:
        raise ClusterError(f"{target.name} is not streaming from {primary.name}: a switchover "
                           "could lose writes; bring it back first (`cardmint cluster status`)")


async def _final_lsn(pg: PgBin, user: OsUser, node: Node, stop_mode: str) -> int | None:
    """The old primary's shutdown checkpoint, when it shut down cleanly (else None)."""
    if stop_mode != "fast":
        return None
    done = await asyncio.to_thread(user.run, [pg("pg_controldata"), "-D", node.datadir],
                                   env={"LC_ALL": "C"})
    fields = controldata_fields(done.stdout)
    if fields.get("Database cluster state") != "shut down":
        return None
    return parse_lsn(fields.get("Latest checkpoint location"))


async def _replayed(conn: asyncpg.Connection, final: int,
                    timeout: float = REPLAY_TIMEOUT_S) -> bool:
    """Until the target has replayed past the old primary's shutdown checkpoint record."""
    deadline = time.monotonic() + timeout
    while True:
        lsn = parse_lsn(await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text"))
        if lsn is not None and lsn > final:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
