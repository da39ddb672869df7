"""The operations dashboard's snapshot: everything the person on call looks at, gathered
at once and rendered by the web page (and anything else that wants it as JSON).

Sections are gathered concurrently and each one survives its own failure: with no
primary the nodes and the health checks still show, and a section that could not be read
says why (`available: False`, `error`) instead of failing the page. Every error text
goes through `redact`, so no DSN password reaches the page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from cardmint.clock import utc
from cardmint.cluster.provider import open_cluster
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.dsn import redact
from cardmint.errors import CardmintError
from cardmint.ops import maintenance
from cardmint.ops.health.checks import CRITICAL, OK, WARN, level, worst
from cardmint.ops.health.report import HealthReport, check_health
from cardmint.ops.incidents.lifecycle import list_incidents
from cardmint.ops.monitor import history
from cardmint.ops.monitor.alerts import list_alerts

log = logging.getLogger("cardmint.dashboard")

WINDOW = timedelta(hours=1)
LIST_LIMIT = 20
# a node in one of these states serves nothing: red whatever its checks say
DOWN_STATES = {"stopped": "not running", "unreachable": "not answering",
               "fenced": "fenced: needs `cardmint cluster rejoin`"}
_EXPECTED = (CardmintError, TimeoutError, OSError, asyncpg.PostgresError,
             asyncpg.InterfaceError)


async def _section(name: str, read: Callable[[], Awaitable[dict[str, Any]]],
                   timeout_s: float) -> dict[str, Any]:
    """`read()`'s dict marked available, or why it is not; never raises (but cancels)."""
    try:
        data = await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s"
    except _EXPECTED as exc:
        reason = redact(str(exc)) or type(exc).__name__
    except Exception:  # a bug: logged with its traceback; the rest of the page still shows
        log.exception("dashboard section %s failed", name)
        reason = "internal error (see the server log)"
    else:
        return {"available": True, "error": None, **data}
    return {"available": False, "error": reason}


async def cluster_status(settings: Settings) -> dict[str, Any]:
    """What `cardmint cluster status` reports, from whichever engine runs the cluster."""
    return (await open_cluster(settings).status()).to_dict()


def _nodes_from_health(report: HealthReport) -> list[dict[str, Any]]:
    """The nodes as the health checks saw them: the fallback when the engine cannot be
    asked (no cluster.json here, flyctl missing...)."""
    out = []
    for name, f in report.figures.get("nodes", {}).items():
        if not f.get("reachable"):
            out.append({"name": name, "role": None, "running": None, "state": "unreachable",
                        "timeline": None, "lsn": None, "lag_s": None, "lag_bytes": None,
                        "error": f.get("error")})
            continue
        replica = f["in_recovery"]
        out.append({"name": name, "role": "replica" if replica else "primary",
                    "running": True,
                    "state": ("streaming" if f["streaming"] else "recovering") if replica
                    else "accepting writes",
                    "timeline": f["timeline"], "lsn": f["lsn"],
                    "lag_s": round(f["lag_s"], 3) if replica else 0.0,
                    "lag_bytes": f["replay_lag_bytes"] if replica else 0, "error": None})
    return out


def judge_node(node: dict[str, Any], checks: list[dict[str, Any]],
               settings: Settings) -> tuple[str, list[str]]:
    """A node's status and why: down is critical; a replica's lag by the runbook's
    thresholds; then the worst health check that names the node."""
    statuses, reasons = [OK], []
    state = node.get("state")
    if state in DOWN_STATES or node.get("running") is False:
        # critical: P1 for a replica (as `health` and the node_unreachable alert say),
        # and the command that brings it back
        statuses.append(CRITICAL)
        why = DOWN_STATES.get(state or "", "not running")
        if node.get("role") != "primary" and "rejoin" not in why:
            why += f" (to fix: `cardmint cluster rejoin {node['name']}`)"
        reasons.append(why)
    elif node.get("role") == "replica":
        lag = level(node.get("lag_s"), settings.replica_lag_warn_s,
                    settings.replica_lag_critical_s)
        if lag != OK:
            statuses.append(lag)
            reasons.append(f"{node['lag_s']:g} s behind")
        if state == "recovering":
            statuses.append(WARN)
            reasons.append("not streaming from the primary")
    if (node.get("patroni") or {}).get("running") is False:
        # the server still serves, but nothing will fail it over (or over to it)
        statuses.append(WARN)
        reasons.append("its Patroni agent is not running")
    for c in checks:
        if c["node"] == node["name"] and c["status"] != OK:
            statuses.append(c["status"])
            reasons.append(f"{c['name']} {c['status']}")
    return worst(statuses), reasons


def _health_section(report: HealthReport) -> dict[str, Any]:
    data = report.to_dict()
    for c in data["checks"]:
        c["detail"] = redact(c["detail"] or "")
    return {"status": data["status"], "severity": data["severity"],
            "checked_at": report.checked_at, "checks": data["checks"]}


async def snapshot(settings: Settings, db: Database,
                   now: datetime | None = None) -> dict[str, Any]:
    """Nodes, health checks, the last hour's latency and pool series, open alerts and
    incidents, the latest backups and drills, and the maintenance window, as of `now`."""
    now = utc(now)
    quick = 2 * settings.connect_timeout_s  # one query, or one node's connect
    slow = 3 * settings.connect_timeout_s  # health asks every node, then probes

    health_report: list[HealthReport] = []

    async def health() -> dict[str, Any]:
        report = await check_health(settings, now=now)
        health_report.append(report)
        return _health_section(report)

    async def cluster() -> dict[str, Any]:
        status = await cluster_status(settings)
        return {"provider": status.get("provider"), "nodes": status["nodes"]}

    async def alerts() -> dict[str, Any]:
        return {"items": await list_alerts(db, limit=LIST_LIMIT)}

    async def incidents() -> dict[str, Any]:
        found = await list_incidents(db, now=now, limit=LIST_LIMIT)
        return {"items": [i.to_dict() for i in found]}

    async def window() -> dict[str, Any]:
        return maintenance.status(now)

    names = ("cluster", "health", "series", "alerts", "incidents", "backups", "drills",
             "maintenance")
    sections = await asyncio.gather(
        _section("cluster", cluster, slow),
        _section("health", health, slow),
        _section("series", lambda: history.series(db, settings, since=now - WINDOW, until=now),
                 quick),
        _section("alerts", alerts, quick),
        _section("incidents", incidents, quick),
        _section("backups", lambda: history.latest_backups(db, settings), quick),
        _section("drills", lambda: history.latest_drills(db), quick),
        _section("maintenance", window, quick),
    )
    out: dict[str, Any] = dict(zip(names, sections, strict=True))
    out["taken_at"] = now

    cluster_data = out["cluster"]
    if not cluster_data["available"] and health_report:
        # the engine could not say; the nodes as the health checks reached them
        cluster_data["fallback"] = "from the health checks"
        cluster_data["nodes"] = _nodes_from_health(health_report[0])
    checks = out["health"].get("checks", [])
    for node in cluster_data.get("nodes", []):
        node["error"] = redact(node["error"]) if node.get("error") else None
        node["status"], node["reasons"] = judge_node(node, checks, settings)
    out["thresholds"] = {
        "latency_p95_warn_ms": settings.latency_p95_warn_ms,
        "latency_p95_critical_ms": settings.latency_p95_critical_ms,
        "pool_warn_pct": settings.pool_utilization_warn_pct,
        "pool_critical_pct": settings.pool_utilization_critical_pct,
        "replica_lag_warn_s": settings.replica_lag_warn_s,
        "replica_lag_critical_s": settings.replica_lag_critical_s,
    }
    out["failed_drill"] = failed_drill(out)
    out["status"] = overall(out)
    return out


def overall(snap: dict[str, Any]) -> str:
    """The page's one word: the worst node or check; critical when neither could be read."""
    nodes = snap["cluster"].get("nodes") or []
    statuses = [n["status"] for n in nodes]
    if snap["health"]["available"]:
        statuses.append(snap["health"]["status"])
    if not statuses:
        return CRITICAL
    if failed_drill(snap):  # "all clear" must not hide a failover that did not hold
        statuses.append(WARN)
    return worst(statuses)


def failed_drill(snap: dict[str, Any]) -> dict[str, Any] | None:
    """The latest failover drill, if it failed (the drills section lists newest first)."""
    drills = snap.get("drills") or {}
    items = drills.get("items") or [] if drills.get("available") else []
    return items[0] if items and not items[0].get("ok") else None
