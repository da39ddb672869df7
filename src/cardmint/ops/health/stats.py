"""`cardmint stats`: the figures behind the runbook's "High Latency" investigation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from cardmint.cluster.pg import logs
from cardmint.cluster.state import load as load_state
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.db.connect import connection
from cardmint.errors import CardmintError
from cardmint.ops import facts
from cardmint.ops.health.pooler import pooler_status
from cardmint.ops.health.report import probe, survey


async def collect_stats(settings: Settings, *, window_s: float = 2.0) -> dict[str, Any]:
    """Probe latency, rates over `window_s`, connections, slow queries, sizes, lag, pools."""
    targets, answers = await survey(settings)
    nodes = [a for a in answers if not isinstance(a, str)]
    primary = next((n for n in nodes if not n.in_recovery), None)
    report: dict[str, Any] = {
        "collected_at": datetime.now(UTC).isoformat(),
        "nodes": [{"name": name, **({"error": a} if isinstance(a, str) else
                                   {"role": a.role, "lsn": a.lsn, "lag_s": a.lag_s,
                                    "select1_ms": a.select1_ms, "streaming": a.streaming})}
                  for (name, _), a in zip(targets, answers, strict=True)],
    }
    latency_task = asyncio.create_task(_latency(settings))
    if primary is not None:
        dsn = dict(targets)[primary.name]
        async with connection(dsn, settings, application="cardmint-stats") as conn:
            before = await facts.database_activity(conn)
            await asyncio.sleep(window_s)  # the measurement window itself
            after = await facts.database_activity(conn)
            conns = await facts.connections(conn, long_after_s=settings.long_transaction_warn_s)
            report.update(
                activity={**facts.activity_rates(before, after),
                          "cache_hit_pct_total": facts.cache_hit_pct(after)},
                connections={k: v for k, v in facts.as_dict(conns).items()
                             if k not in ("idle_in_transaction", "long_transactions")},
                slow_queries=await facts.slow_queries(conn),
                tables=await facts.table_sizes(conn),
                indexes=await facts.index_sizes(conn),
                replication=await facts.replication(conn),
            )
        report["pools"] = {
            process: {"in_use": busy, "max": settings.pool_max,
                      "utilization_pct": round(100.0 * busy / settings.pool_max, 1)}
            for process, busy in conns.app_busy.items()}
    report["latency"] = await latency_task
    report["server_errors"] = server_errors(settings)
    report["pooler"] = await pooler_status(settings)  # SHOW POOLS / SHOW STATS, or None
    return report


async def _latency(settings: Settings) -> dict[str, Any]:
    db = Database(settings.model_copy(update={"pool_min": 1, "pool_max": 4}))
    try:
        await db.open(monitor=False)
    except CardmintError as exc:
        return {"error": str(exc)}
    try:
        await probe(db, settings.health_probe_queries)
        return db.latency_stats()
    finally:
        await db.close()


def server_errors(settings: Settings) -> dict[str, Any] | None:
    """ERROR/FATAL/PANIC lines of the last hour in the local cluster's server logs, by
    SQLSTATE (the runbook's `logs | grep ERROR`); None without a local cluster."""
    try:
        state = load_state(settings.home)
    except CardmintError:
        return None
    if state is None:
        return None
    return logs.error_summary(state, datetime.now(UTC) - timedelta(hours=1))
