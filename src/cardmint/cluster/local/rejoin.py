"""Bringing a node back as a streaming replica of the current primary.

pg_rewind first (it copies only what diverged); a fresh base backup when rewind is
impossible (no common history, missing WAL, a damaged directory) or the rewound node will
not stream. Pitfalls measured on this machine and handled here: the backends of a
SIGKILLed postmaster linger 1-2 s, so we wait for every process whose working directory
is the data directory; pg_rewind reports "no rewind required" against a primary that has
not checkpointed since its promotion, so the primary checkpoints first; and pg_rewind
copies the primary's configuration files, so the node's port, name, conninfo and slot are
written again afterwards.

A crashed primary's rewind needs WAL that may be gone from both servers' pg_wal (issue
18): the rewound node replays from the last checkpoint before the divergence, through the
new timeline's first segments, and the new primary recycles those at its next checkpoint
(the one we ask for included) once they are archived; no slot keeps them for a node that
was not its standby. Without a restore_command the node then waited for a segment nobody
could send, never became consistent, and rejoin fell back to a base backup after 60 s.
So a rejoining node reads the WAL archive (restore_command, pg_rewind
--restore-target-wal for its own old segments), and a start that sits waiting for one
segment is given up after STUCK_S, not 60 s. (A flush of the crashed directory would
not help: a SIGKILLed postmaster's writes are in the page cache, which pg_rewind reads,
and pg_rewind syncs the directory itself when done.)
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from cardmint.cluster.engine import RejoinReport
from cardmint.cluster.local import syncrep
from cardmint.cluster.pg import backrest, nodes, process, replication
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import REPLICATION, SUPERUSER, ClusterState, Node
from cardmint.errors import ClusterError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

log = logging.getLogger("cardmint.rejoin")

# Rewritten for a standby: its upstream, and none of a primary's synchronous standbys.
REPLICA_ONLY = ("primary_conninfo", "primary_slot_name", "synchronous_standby_names",
                "restore_command")
# A rewound node whose recovery shows no progress (the segment it replays) for this long
# before it is consistent is missing WAL: fall back to a base backup then, not after 60 s.
# A 16 MB segment replays in well under a second here.
STUCK_S = 10.0
LEGACY_PASSFILE = "cardmint-replication.pgpass"  # in the data directory, before issue 15


def standby_config(user: OsUser, node: Node, primary: Node, password: str, archive: Path,
                   *, stopped: bool = True) -> None:
    """Make a copied directory `node`'s again and point it at `primary`: its port and name,
    its conninfo and slot, none of the primary's synchronous standby names and, when the
    server is `stopped`, no replication slots of its own (they would hold WAL forever)."""
    datadir = Path(node.datadir)
    nodes.configure(user, node, archive)
    point_at(user, node, primary, password, archive)
    for slot in (datadir / "pg_replslot").glob("*") if stopped else ():
        shutil.rmtree(slot, ignore_errors=True)


def passfile(node: Node) -> Path:
    """Where `node` keeps the replication password: beside its data directory, not in
    it, so that no base backup, rewind or clone of that directory carries it. A secret
    store of the home (mode 0600, `cluster.home.SECRET_STORES`)."""
    datadir = Path(node.datadir)
    return datadir.with_name(f"{datadir.name}.pgpass")


def write_passfile(user: OsUser, node: Node, password: str) -> None:
    """The replication password for `node`'s WAL receiver (read at each new login)."""
    nodes.write(user, passfile(node), f"*:*:*:{REPLICATION}:{_pgpass(password)}\n")
    (Path(node.datadir) / LEGACY_PASSFILE).unlink(missing_ok=True)


def point_at(user: OsUser, node: Node, primary: Node, password: str,
             archive: Path | None = None) -> None:
    """Point `node` at `primary` on its own slot, and at the WAL `archive` for what the
    primary no longer has. The password goes to a password file, not into
    primary_conninfo: a reload logs the changed conninfo in the server log."""
    datadir = Path(node.datadir)
    write_passfile(user, node, password)
    conninfo = (f"host={primary.host} port={primary.port} user={REPLICATION} "
                f"passfile='{passfile(node)}' application_name={node.name}")
    lines = [f"primary_conninfo = {nodes.conf_string(conninfo)}",
             f"primary_slot_name = {nodes.conf_string(node.slot)}"]
    auto_conf(user, node, REPLICA_ONLY, lines)
    if archive is not None:
        read_archive(user, node, archive)
    nodes.write(user, datadir / "standby.signal", "")


def read_archive(user: OsUser, node: Node, archive: Path) -> None:
    """Recovery on `node` may fetch WAL from the cluster's pgBackRest repositories
    (`archive` is the home's pgBackRest directory; restore_command is archive-get)."""
    auto_conf(user, node, ("restore_command",),
              [f"restore_command = "
               f"{nodes.conf_string(backrest.restore_command(archive, prefetch=False))}"])


def auto_conf(user: OsUser, node: Node, drop: tuple[str, ...], add: list[str]) -> None:
    """postgresql.auto.conf without the settings named in `drop`, plus the lines `add`."""
    auto = Path(node.datadir) / "postgresql.auto.conf"
    lines = [line for line in (auto.read_text().splitlines() if auto.exists() else [])
             if not line.strip().startswith(drop)]
    nodes.write(user, auto, "\n".join([*lines, *add]) + "\n")


def _pgpass(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def rewind(pg: PgBin, user: OsUser, node: Node, primary: Node, password: str,
           archive: Path) -> str:
    """pg_rewind `node` from the running `primary`; the password goes by environment.
    The node's own old WAL it no longer holds comes from the `archive`."""
    if not Path(pg("pg_rewind")).is_file():
        raise ClusterError(f"no pg_rewind in {pg.bindir}")
    # pg_rewind --restore-target-wal asks the target's configuration for its command
    read_archive(user, node, archive)
    # The fence must go for a moment: pg_rewind first finishes a crashed target's
    # recovery in single-user mode, which refuses standby mode. The lock is ours and
    # the server is stopped, and standby_config puts the file back.
    (Path(node.datadir) / "standby.signal").unlink(missing_ok=True)
    source = (f"host={primary.host} port={primary.port} user={SUPERUSER} dbname=postgres "
              "application_name=cardmint-rewind")
    done = user.run([pg("pg_rewind"), "--target-pgdata", node.datadir, "--restore-target-wal",
                     "--source-server", source], env={"PGPASSWORD": password})
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else ""


async def apply_sync(conn: asyncpg.Connection, state: ClusterState,
                     streaming: set[str] | None = None) -> str | None:
    """Name the replicas as synchronous standbys (a cluster made with --sync) if one of
    them streams (`streaming`, else as pg_stat_replication says): naming only standbys
    that are not streaming would make every commit wait."""
    if not state.sync:
        return None
    if streaming is None:
        streaming = await replication.streaming_names(conn)
    names = syncrep.sync_names(state) if any(n.name in streaming for n in state.replicas) else ""
    await syncrep.set_names(conn, names)
    if names:
        await replication.wait_streaming(
            conn, [n.name for n in state.replicas if n.name in streaming], sync=True)
    return names


RESTART_STREAM_S = 15.0  # a replica that merely stopped streams within seconds


def why_not_rewound(exc: ClusterError) -> str:
    """pg_rewind's or the server's refusal in our words (their text is in the logs)."""
    text = str(exc).lower()
    if "no common ancestor" in text or "could not find common ancestor" in text:
        return "its history and the primary's share no point to rewind to"
    if "pg_control" in text:
        return "pg_rewind cannot read its data directory (pg_control: damaged)"
    if "has already been removed" in text or "could not find previous wal record" in text \
            or ("could not open file" in text and "pg_wal" in text):
        return "the WAL it would need to rewind is no longer there"
    if "does not stream after pg_rewind" in text:
        return "it did not stream after the rewind"
    if "no pg_rewind" in text:
        return "pg_rewind is not installed"
    return "pg_rewind failed (details in the node's log under logs/)"


async def rejoin_node(cluster: LocalCluster, state: ClusterState, node: Node) -> RejoinReport:
    """Make `node` a streaming replica of `state.primary`, the lightest way that works:
    a replica that merely stopped is started again; else pg_rewind; else a fresh base
    backup. The caller holds the cluster lock and saves the state. Each step is logged
    (logger `cardmint.rejoin`, which `cluster rejoin` prints as progress)."""
    began = time.monotonic()
    primary = state.primary
    if node.name == primary.name:
        raise ClusterError(f"{node.name} is the primary; rejoin another node")
    pg = PgBin(Path(state.bindir), state.pg_version)
    user = OsUser.resolve(cluster.settings.pg_os_user)
    passwords = cluster.admin.passwords()
    # a replica (not a fenced former primary) holds no write of its own: starting it may
    # be all it needs, and a copy of its directory need not be kept
    was_standby = node.role == "replica" and (Path(node.datadir) / "standby.signal").exists()
    await _stop(node)
    conn = await cluster.admin.connect(primary, "postgres")
    try:
        if was_standby and await _restart(cluster, conn, pg, user, node, primary, passwords):
            node.role = "replica"
            names = await apply_sync(conn, state)
            return RejoinReport(node=node.name, primary=primary.name, method="restart",
                                fallback_reason=None, set_aside=None, streaming=True,
                                sync_names=names,
                                duration_s=round(time.monotonic() - began, 3))
        # pg_rewind compares against the primary's last checkpoint: one made before the
        # promotion makes it answer "no rewind required" and leave a broken standby.
        await conn.execute("CHECKPOINT")
        reason = kept = None
        log.info("%s: rewinding it to %s's history (pg_rewind)", node.name, primary.name)
        try:
            await asyncio.to_thread(rewind, pg, user, node, primary, passwords[SUPERUSER],
                                    cluster.archive)
            standby_config(user, node, primary, passwords[REPLICATION], cluster.archive)
            await replication.ensure_slot(conn, node.slot)
            node.pid = await cluster.start_node(pg, user, node, stuck_after=STUCK_S)
            if not await replication.wait_streaming(conn, [node.name]):
                raise ClusterError(f"{node.name} does not stream after pg_rewind: "
                                   f"{process.tail(cluster.log(node), 5)}")
        except ClusterError as exc:
            reason = why_not_rewound(exc)
            await _stop(node)
            await replication.drop_slot(conn, node.slot, timeout=0)
            kept = set_aside(Path(node.datadir))
            size = await conn.fetchval("SELECT pg_size_pretty(sum(pg_database_size(oid))) "
                                       "FROM pg_database")
            log.info("%s: %s; copying %s afresh from %s (a base backup of about %s; this "
                     "takes a while)", node.name, reason, node.name, primary.name, size)
            copy = asyncio.create_task(asyncio.to_thread(
                nodes.base_backup, pg, user, primary, node,
                passwords[REPLICATION]))  # creates the slot again
            await _report_progress(copy, Path(node.datadir), node.name)
            standby_config(user, node, primary, passwords[REPLICATION], cluster.archive)
            log.info("%s: starting it as a replica of %s", node.name, primary.name)
            node.pid = await cluster.start_node(pg, user, node)
            if not await replication.wait_streaming(conn, [node.name]):
                raise ClusterError(f"{node.name} does not stream after a fresh base backup; "
                                   f"see its log ({cluster.log(node)})") from exc
            if kept is not None and was_standby:
                # a standby's old directory holds nothing the primary lacks: not kept
                shutil.rmtree(kept, ignore_errors=True)
                kept = None
        node.role = "replica"
        names = await apply_sync(conn, state)
    finally:
        await conn.close()
    return RejoinReport(node=node.name, primary=primary.name,
                        method="rewind" if reason is None else "basebackup",
                        fallback_reason=reason, set_aside=kept, streaming=True,
                        sync_names=names,
                        duration_s=round(time.monotonic() - began, 3))


async def _restart(cluster: LocalCluster, conn: asyncpg.Connection, pg: PgBin, user: OsUser,
                   node: Node, primary: Node, passwords: dict[str, str]) -> bool:
    """Start a stopped standby as it is (pointed at the current primary): whether it
    streams. If not, it is stopped again for the heavier ways."""
    log.info("%s: starting it again as it is (a replica that stopped needs no more)",
             node.name)
    try:
        standby_config(user, node, primary, passwords[REPLICATION], cluster.archive,
                       stopped=False)
        await replication.ensure_slot(conn, node.slot)
        node.pid = await cluster.start_node(pg, user, node)
        if await replication.wait_streaming(conn, [node.name], timeout=RESTART_STREAM_S):
            log.info("%s: streams from %s again", node.name, primary.name)
            return True
    except ClusterError as exc:
        log.info("%s: a plain start was not enough (%s)", node.name,
                 str(exc).splitlines()[0][:120])
    await _stop(node)
    return False


async def _report_progress(copy: asyncio.Task[None], datadir: Path, name: str,
                           every_s: float = 5.0) -> None:
    """Log how much of the copy is on disk every few seconds until it is done."""
    while not copy.done():
        await asyncio.wait({copy}, timeout=every_s)
        if not copy.done():
            size = await asyncio.to_thread(_bytes_under, datadir)
            log.info("%s: %.0f MB copied so far", name, size / 2**20)
    await copy


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def set_aside(datadir: Path) -> str | None:
    """Move a directory a base backup would overwrite to `<name>.before-rejoin` (replacing
    an older one): after an asynchronous failover it may hold writes no other node has."""
    if not datadir.exists():
        return None
    aside = datadir.with_name(datadir.name + ".before-rejoin")
    shutil.rmtree(aside, ignore_errors=True)
    datadir.rename(aside)
    return str(aside)


async def _stop(node: Node) -> None:
    """Stop the node's server by PID if it runs, and wait for every process of it."""
    datadir = Path(node.datadir)
    pid = process.postmaster_pid(datadir)
    if pid is not None:
        await process.stop(pid)
    node.pid = None
    await process.wait_gone(datadir)
