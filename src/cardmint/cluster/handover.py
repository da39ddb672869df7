"""What every engine's failover shares: asking the replicas what WAL they hold, choosing
the one to promote, the new primary's position, and timing the steps.

Choosing the target and the roles after a promotion are pure functions, tested without
a cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from cardmint.cluster.pg.admin import NodeAdmin, one_row
from cardmint.cluster.pg.probe import parse_lsn
from cardmint.cluster.state import FENCED, ClusterState, Node
from cardmint.errors import ClusterError, UsageError

CANDIDATE_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'),
                coalesce(pg_last_wal_replay_lsn(), '0/0'))::text AS lsn,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming
"""
POSITION_SQL = """
SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
       pg_current_wal_lsn()::text AS lsn
"""

Conns = dict[str, asyncpg.Connection]


@dataclass(frozen=True)
class Candidate:
    name: str
    in_recovery: bool | None  # None: it did not answer
    lsn: int | None  # the WAL it holds: the greater of received and replayed
    streaming: bool = False  # its WAL receiver still streams (from the old primary)


def choose_target(candidates: Sequence[Candidate], requested: str | None = None) -> Candidate:
    """The replica to promote: the one holding the most WAL (with synchronous replication
    it holds every acknowledged commit), or `requested` if it is not behind another."""
    usable = [c for c in candidates if c.in_recovery and c.lsn is not None]
    if requested is not None:
        match = next((c for c in candidates if c.name == requested), None)
        if match is None:
            raise UsageError(f"{requested} is not a replica of this cluster; replicas: "
                             f"{', '.join(c.name for c in candidates) or 'none'}")
        if match not in usable:
            why = "not reachable" if match.in_recovery is None else "not in recovery"
            raise ClusterError(f"{requested} cannot be promoted: it is {why}")
    if not usable:
        raise ClusterError("no reachable replica in recovery to promote")
    best = max(usable, key=lambda c: c.lsn or 0)
    if requested is None:
        return best
    chosen = next(c for c in usable if c.name == requested)
    if (chosen.lsn or 0) < (best.lsn or 0):
        raise ClusterError(
            f"{requested} is {(best.lsn or 0) - (chosen.lsn or 0)} bytes of WAL behind "
            f"{best.name}: promoting it would lose what only {best.name} has; promote "
            f"{best.name} (or leave out --to)")
    return chosen


def promoted(state: ClusterState, new_primary: str, old_primary: str) -> None:
    """The roles after promoting `new_primary`: it is the primary and `old_primary` is
    fenced. DSNs derive from the roles, primary first."""
    for node in state.nodes:
        if node.name == new_primary:
            node.role = "primary"
        elif node.name == old_primary:
            node.role = FENCED
            node.pid = None


async def probe_candidates(admin: NodeAdmin, replicas: list[Node],
                           conns: Conns | None = None) -> list[Candidate]:
    """Ask every replica what WAL it holds (on `conns` where given: no connect time)."""

    async def ask(node: Node) -> Candidate:
        conn = (conns or {}).get(node.name)
        owned = conn is None
        try:
            if conn is None:
                conn = await admin.connect(node, "postgres", timeout=3)
            row = await one_row(conn, CANDIDATE_SQL)
            return Candidate(node.name, row["in_recovery"], parse_lsn(row["lsn"]),
                             row["streaming"])
        except (ClusterError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return Candidate(node.name, None, None)
        finally:
            if owned and conn is not None:
                await conn.close()

    return list(await asyncio.gather(*(ask(n) for n in replicas)))


def lsn_text(lsn: int | None) -> str | None:
    return None if lsn is None else f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class Timer:
    """Where a procedure's time went, step by step."""

    def __init__(self) -> None:
        self.began = self.last = time.monotonic()
        self.steps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self.last, 4)
        self.last = now

    def total(self) -> float:
        return round(time.monotonic() - self.began, 3)
