"""Synchronous replication: which standbys to name, and when to give up waiting for them.

A cluster made with `--sync` names every replica in `synchronous_standby_names`
(`FIRST 1 (...)`): a commit returns once one of them has flushed it. With none of them
streaming, PostgreSQL makes every COMMIT wait forever (statement_timeout does not stop
it), so `decide` turns what the primary reports into one action: degrade to asynchronous
after a bounded wait (or only alert, in strict mode), and restore once a standby streams.
It is a pure function of an observation, a remembered moment and `now`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from cardmint.cluster.pg.admin import one_row
from cardmint.cluster.pg.roles import literal
from cardmint.cluster.state import ClusterState

NONE, DEGRADE, ALERT, RESTORE = "none", "degrade", "alert", "restore"

OBSERVE_SQL = """
SELECT current_setting('synchronous_standby_names') AS configured,
       coalesce((SELECT array_agg(application_name::text) FROM pg_stat_replication
                 WHERE state = 'streaming'), '{}') AS streaming,
       (SELECT extract(epoch FROM now() - min(query_start))::float8 FROM pg_stat_activity
        WHERE wait_event = 'SyncRep') AS oldest_wait_s,
       (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep')::int AS waiting
"""


def sync_names(state: ClusterState) -> str:
    """`synchronous_standby_names` for the cluster's replicas now ('' without any)."""
    names = [n.name for n in state.replicas]
    return f"FIRST 1 ({', '.join(names)})" if names else ""


def named(configured: str) -> list[str]:
    """The standby names in a synchronous_standby_names value ('*' included)."""
    inner = re.sub(r"^\s*(?:(?:FIRST|ANY)\s+)?\d+\s*\(", "", configured, flags=re.IGNORECASE)
    return [p.strip().strip('"') for p in inner.rstrip(") ").split(",") if p.strip()]


@dataclass(frozen=True)
class Observation:
    wanted: bool  # the cluster was made with --sync
    configured: str  # synchronous_standby_names on the primary now
    candidates: tuple[str, ...]  # the replicas that may be synchronous
    streaming: tuple[str, ...]  # application names streaming now
    oldest_wait_s: float | None  # the longest a commit has waited on SyncRep
    waiting: int = 0


@dataclass(frozen=True)
class Decision:
    action: str  # none | degrade | alert | restore
    reason: str
    missing_since: float | None  # remembered for the next round
    ok: bool = False  # replication is as wanted (after this action): an alert may resolve


def decide(obs: Observation, missing_since: float | None, now: float, *, bound_s: float,
           strict: bool) -> Decision:
    """What the guard does this round. `missing_since` is when the guard first saw no
    synchronous standby streaming (None if it saw one); `now` is a monotonic clock."""
    if not obs.configured.strip():
        if not obs.wanted:
            return Decision(NONE, "asynchronous by design", None, ok=True)
        back = [s for s in obs.streaming if s in obs.candidates]
        if back:
            return Decision(RESTORE, f"{', '.join(back)} streams again", None, ok=True)
        return Decision(NONE, "degraded: no standby streams yet", missing_since)
    names = named(obs.configured)
    up = [s for s in obs.streaming if "*" in names or s in names]
    missing_since = None if up else (missing_since if missing_since is not None else now)
    stuck_s = obs.oldest_wait_s or 0.0
    missing_s = 0.0 if missing_since is None else now - missing_since
    if stuck_s < bound_s and missing_s < bound_s:
        if up:
            return Decision(NONE, "synchronous", None, ok=True)
        return Decision(NONE, f"no synchronous standby streaming for {missing_s:.1f} s",
                        missing_since)
    why = (f"{obs.waiting} commit(s) waiting on a synchronous standby for {stuck_s:.1f} s"
           if stuck_s >= bound_s else
           f"no synchronous standby ({', '.join(names)}) streaming for {missing_s:.1f} s")
    return Decision(ALERT if strict else DEGRADE, why, missing_since)


async def observe(conn: asyncpg.Connection, state: ClusterState) -> Observation:
    """What the primary says (a superuser or pg_monitor connection)."""
    row = await one_row(conn, OBSERVE_SQL)
    return Observation(wanted=state.sync, configured=row["configured"],
                       candidates=tuple(n.name for n in state.replicas),
                       streaming=tuple(row["streaming"]), oldest_wait_s=row["oldest_wait_s"],
                       waiting=row["waiting"])


async def set_names(conn: asyncpg.Connection, names: str) -> None:
    """ALTER SYSTEM + reload on the primary (superuser). Neither waits on a standby, so
    this works while commits hang; emptying the list releases every waiting commit."""
    await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = {literal(names)}")
    await conn.execute("SELECT pg_reload_conf()")


async def enforce(conn: asyncpg.Connection, state: ClusterState, missing_since: float | None,
                  now: float, *, bound_s: float, strict: bool) -> tuple[Observation, Decision]:
    """One round on the primary behind `conn` (superuser): observe, decide, act."""
    obs = await observe(conn, state)
    decision = decide(obs, missing_since, now, bound_s=bound_s, strict=strict)
    if decision.action == DEGRADE:
        await set_names(conn, "")
    elif decision.action == RESTORE:
        await set_names(conn, sync_names(state))
    return obs, decision
