"""Adding and removing read replicas on a running cluster (runbook: add replicas when reads
outnumber writes 5:1), without stopping the application.

A new replica is cloned from the current primary with its own slot and application_name and
enters cluster.json only once it streams: applications' `Database` objects follow that file,
so they never route a read to a node that cannot answer. Removal goes the other way: out of
the state first (reads drain to the other nodes), then stopped by PID, its slot dropped (a
forgotten slot holds WAL forever) and its directory deleted.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from cardmint.cluster.engine import ReplicaReport
from cardmint.cluster.home import free_ports
from cardmint.cluster.local import rejoin
from cardmint.cluster.pg import nodes, process, replication
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import REPLICATION, ClusterState, Node, save
from cardmint.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

DRAIN_TIMEOUT_S = 10.0


def next_name(state: ClusterState, home: Path) -> str:
    """node<N+1> after the highest number in use (in the state or left on disk)."""
    taken = {n.name for n in state.nodes}
    taken |= {p.name for p in (home / "nodes").glob("node*")}
    numbers = [int(m.group(1)) for t in taken if (m := re.fullmatch(r"node(\d+)", t))]
    return f"node{max(numbers, default=0) + 1}"


async def add_replica(cluster: LocalCluster, *, sync: bool = False) -> ReplicaReport:
    """Clone the primary into a new node, start it, wait until it streams, then record it.
    With `sync` the cluster becomes synchronous (FIRST 1 of its replicas)."""
    began = time.monotonic()
    with cluster.lock():
        state = cluster.ready_state()
        primary = state.primary
        if process.postmaster_pid(Path(primary.datadir)) is None:
            raise ClusterError(f"the primary {primary.name} is not running")
        name = next_name(state, cluster.home)
        node = Node(name=name, role="replica", port=free_ports(1)[0],
                    datadir=str(cluster.home / "nodes" / name))
        pg = PgBin(Path(state.bindir), state.pg_version)
        user = OsUser.resolve(cluster.settings.pg_os_user)
        password = cluster.admin.passwords()[REPLICATION]
        conn = await cluster.admin.connect(primary, "postgres")
        try:
            try:
                await asyncio.to_thread(nodes.base_backup, pg, user, primary, node, password)
                nodes.configure(user, node, cluster.archive)
                rejoin.point_at(user, node, primary, password)  # password in a 0600 passfile
                node.pid = await cluster.start_node(pg, user, node)
                if not await replication.wait_streaming(conn, [name]):
                    raise ClusterError(f"{name} does not stream: "
                                       f"{process.tail(cluster.log(node), 5)}")
            except BaseException:
                await _discard(conn, node)  # nothing half-made stays: no process, slot, files
                raise
            state.nodes.append(node)
            state.sync = state.sync or sync
            save(state)  # from here on applications' Database objects route reads to it
            names = await rejoin.apply_sync(conn, state)
        finally:
            await conn.close()
    return ReplicaReport("added", name, primary.name, node.port, True, node.slot, names,
                         round(time.monotonic() - began, 3))


async def remove_replica(cluster: LocalCluster, name: str) -> ReplicaReport:
    """Take a replica out: out of the state and the synchronous names, drained of reads,
    stopped by PID, its slot dropped on the primary, its data deleted."""
    began = time.monotonic()
    with cluster.lock():
        state = cluster.ready_state()
        try:
            node = state.node(name)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        if node.role == "primary":
            raise UsageError(f"{name} is the primary: switch over to another node first "
                             "(`cardmint cluster switchover`), then remove it")
        primary = state.primary
        conn = await cluster.admin.connect(primary, "postgres")
        try:
            state.nodes.remove(node)
            save(state)  # applications drop its pool at their next replica check
            names = await rejoin.apply_sync(conn, state) if state.sync else None
            drained = await _drain(cluster, node)
            pid = process.postmaster_pid(Path(node.datadir))
            if pid is not None:
                await process.stop(pid)
            await process.wait_gone(Path(node.datadir))
            dropped = await replication.drop_slot(conn, node.slot)
        finally:
            await conn.close()
        shutil.rmtree(node.datadir, ignore_errors=True)
        rejoin.passfile(node).unlink(missing_ok=True)
    return ReplicaReport("removed", name, primary.name, node.port, False, node.slot, names,
                         round(time.monotonic() - began, 3), drained=drained,
                         slot_dropped=dropped)


async def _drain(cluster: LocalCluster, node: Node) -> bool:
    """Until no application pool holds a connection to `node` (they close it once they
    see the new state), or a bound: reads still there are retried on the primary."""
    bound = max(DRAIN_TIMEOUT_S, 3 * cluster.settings.replica_check_interval_s)
    deadline = time.monotonic() + bound
    try:
        conn = await cluster.admin.connect(node, "postgres", timeout=3)
    except ClusterError:
        return True  # not running: nothing to drain
    try:
        while True:
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                "'cardmint-replica/%' AND pid <> pg_backend_pid()")
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _discard(conn: asyncpg.Connection, node: Node) -> None:
    """Undo a failed add: stop the server, drop the slot pg_basebackup made, delete files."""
    pid = process.postmaster_pid(Path(node.datadir))
    if pid is not None:
        await process.stop(pid)
    try:
        await replication.drop_slot(conn, node.slot, timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass
    shutil.rmtree(node.datadir, ignore_errors=True)
    rejoin.passfile(node).unlink(missing_ok=True)
