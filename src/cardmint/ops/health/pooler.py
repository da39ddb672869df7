"""The pooler in health and stats: PgBouncer's own SHOW POOLS / SHOW STATS figures."""

from __future__ import annotations

from typing import Any

from cardmint.cluster.local.pooler import MAX_DB_CONNECTIONS
from cardmint.cluster.provider import open_cluster
from cardmint.config import Settings
from cardmint.errors import CardmintError
from cardmint.ops.health.checks import CRITICAL, WARN, Check, check


async def pooler_status(settings: Settings) -> dict[str, Any] | None:
    """PgBouncer's status when the cluster has one configured, else None (no pooler, or
    an engine without one)."""
    try:
        report = await open_cluster(settings).pooler("status")
    except CardmintError:
        return None
    return report if report.get("configured") else None


def pooler_check(report: dict[str, Any]) -> Check:
    """critical when the application's DSN points at a PgBouncer that is not running; warn
    while it points at a former primary or clients wait for a server connection."""
    bound = float(report.get("max_db_connections") or MAX_DB_CONNECTIONS)
    if not report["running"]:
        return check("pooler", None, "server connections", bound, None, status=CRITICAL,
                     on_critical="P0", detail="PgBouncer is configured but not running: "
                     "the application cannot connect (`cardmint pooler up`)")
    if report.get("error"):
        return check("pooler", None, "server connections", bound, None, status=WARN,
                     detail=f"PgBouncer runs but its console did not answer: {report['error']}")
    waiting = sum(int(p.get("cl_waiting") or 0) for p in report.get("pools", []))
    detail = (f"PgBouncer on port {report['port']} ({report.get('pool_mode')}): "
              f"{report['client_connections']} client(s) on {report['server_connections']} "
              f"server connection(s) of at most {bound:g}; {waiting} waiting")
    if report["stale_target"]:
        return check("pooler", report["server_connections"], "server connections", bound,
                     None, status=WARN, on_warn="P1",
                     detail=f"{detail}; it still points at {report['target']}, the primary is "
                            f"{report['primary']}: run `cardmint pooler up`")
    if waiting:
        return check("pooler", report["server_connections"], "server connections", bound,
                     None, status=WARN, detail=detail)
    return check("pooler", report["server_connections"], "server connections", bound, None,
                 detail=detail)
