"""Restarting a node whose postmaster died, as Patroni does (issue 18 item 5).

Only nodes that belong in the cluster as they are: a fenced former primary comes back only
through `cluster rejoin`. Nothing is promoted here. The work is done only while no other
cardmint command holds the cluster lock: a failover or rejoin in progress stops and starts
nodes itself, and a node it stopped must not be started behind its back.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardmint.cluster.home import locked_if_free
from cardmint.cluster.pg import pgbin, process
from cardmint.cluster.state import FENCED, READY, ClusterState, Node, save
from cardmint.errors import ClusterError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster


@dataclass
class Restart:
    """One dead postmaster found and what became of it."""

    node: str
    role: str
    restarted: bool
    duration_s: float
    pid: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dead_nodes(state: ClusterState) -> list[Node]:
    """Nodes of a ready cluster that should run and have no postmaster."""
    if state.status != READY:
        return []
    return [n for n in state.nodes if n.role != FENCED
            and (Path(n.datadir) / "PG_VERSION").is_file()
            and process.postmaster_pid(Path(n.datadir)) is None]


async def heal(cluster: LocalCluster) -> list[Restart]:
    """Start every node whose postmaster died; [] when none did or the lock is busy."""
    state = cluster.state()
    if state is None or not dead_nodes(state):
        return []  # the common case costs a read of the state and of postmaster.pid
    done: list[Restart] = []
    with locked_if_free(cluster.home) as mine:
        if not mine:
            return []
        state = cluster.state()  # again, under the lock
        if state is None:
            return []
        user = process.OsUser.resolve(cluster.settings.pg_os_user)
        pg = pgbin.PgBin(Path(state.bindir), state.pg_version)
        for node in sorted(dead_nodes(state), key=lambda n: n.role != "primary"):
            began = time.monotonic()
            try:
                # what a SIGKILLed postmaster leaves (backends) must go before a restart
                await process.kill_leftovers(Path(node.datadir))
                node.pid = await cluster.start_node(pg, user, node)
                done.append(Restart(node.name, node.role, True,
                                    round(time.monotonic() - began, 3), pid=node.pid))
            except ClusterError as exc:
                done.append(Restart(node.name, node.role, False,
                                    round(time.monotonic() - began, 3), error=str(exc)))
        save(state)
    return done
