"""The monitor restarts a local node whose postmaster died, and records it (issue 18
item 5): what Patroni does for its members, for the local engine.

Its own cadence (`heal_interval_s`, 5 s), not the monitor's round (60 s), and it works
without leading: a dead primary is exactly when no loop can take the leadership lock on
it. The cluster lock serializes several servers; the engine starts nothing a running
cluster command (failover, rejoin) is in the middle of, and never a fenced node.
Nothing is promoted here: failover stays `cardmint cluster failover`, fenced.

Each restart is written to the alerts table as a P1 alert `postmaster_restarted`,
already resolved (the monitor handled it; people should still learn why the server
died), and logged; a restart that fails is logged as an error and raised as a firing P0
`postmaster_down`, once the database can take it.
"""

from __future__ import annotations

import asyncio
import logging

from cardmint.cluster.local import LocalCluster
from cardmint.cluster.local.heal import Restart
from cardmint.cluster.state import load
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.errors import CardmintError

log = logging.getLogger("cardmint.heal")

RESTARTED, DOWN = "postmaster_restarted", "postmaster_down"
RUNBOOK_SECTION = "Emergency Procedures › Database Connection Failures"
RECOMMENDATION = ("Find why the server died (`cardmint cluster logs --node NODE`, the "
                  "kernel's OOM messages); if it keeps dying, fail over "
                  "(`cardmint cluster failover`) and rebuild it (`cardmint cluster rejoin`).")


async def heal_round(s: Settings) -> list[Restart]:
    """One look: restart what died (local engine only) and record what was done."""
    state = load(s.home.resolve())
    if state is None or state.provider != "local":
        return []  # Patroni restarts its own; Fly machines are restarted by Fly
    done = await LocalCluster(s).heal()
    for restart in done:
        if restart.restarted:
            log.warning("the postmaster of %s (%s) had died; restarted in %.2f s (pid %s)",
                        restart.node, restart.role, restart.duration_s, restart.pid)
        else:
            log.error("the postmaster of %s (%s) died and did not start again: %s",
                      restart.node, restart.role, restart.error)
    if done:
        await _record(s, done)
    return done


async def _record(s: Settings, done: list[Restart]) -> None:
    dsn = secret(s.database_url)
    if not dsn:
        return
    try:
        async with connection(dsn, s, application="cardmint-heal") as conn:
            for r in done:
                if r.restarted:
                    await conn.execute(
                        "INSERT INTO alerts (name, node, severity, status, message, value, "
                        "runbook_section, recommendation, started_at, last_seen_at, "
                        "resolved_at) VALUES ($1, $2, 'P1', 'resolved', $3, $4, $5, $6, "
                        "now(), now(), now())",
                        RESTARTED, r.node,
                        f"the {r.role} {r.node}'s postmaster had died; the monitor restarted "
                        f"it in {r.duration_s:.2f} s", r.duration_s, RUNBOOK_SECTION,
                        RECOMMENDATION)
                else:
                    await conn.execute(
                        "INSERT INTO alerts (name, node, severity, status, message, "
                        "runbook_section, recommendation, started_at, last_seen_at) "
                        "VALUES ($1, $2, 'P0', 'firing', $3, $4, $5, now(), now()) "
                        "ON CONFLICT (name, node) WHERE status = 'firing' "
                        "DO UPDATE SET last_seen_at = now()",
                        DOWN, r.node, f"the {r.role} {r.node}'s postmaster died and did not "
                        f"start again: {r.error}", RUNBOOK_SECTION, RECOMMENDATION)
    except CardmintError as exc:
        log.error("cannot record the restarts in the alerts table: %s", exc)


async def heal_loop(s: Settings, stop: asyncio.Event) -> None:
    """`heal_round` every `heal_interval_s` until `stop` (never with 0: disabled)."""
    if s.heal_interval_s <= 0:
        return
    while not stop.is_set():
        try:
            await heal_round(s)
        except (CardmintError, OSError) as exc:  # the next round tries again
            log.warning("heal round failed: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), s.heal_interval_s)
        except TimeoutError:
            pass
