"""The dashboard's reads of the ops tables: the monitor's samples as time series, the
latest backups and the latest drills. Read-only on purpose: a page that refreshes every
few seconds must not reconcile or prune anything (`cardmint backup list` does that).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from cardmint.config import Settings
from cardmint.db import Database
from cardmint.dsn import redact
from cardmint.errors import CardmintError
from cardmint.ops.backups import store
from cardmint.ops.monitor.sample import GAP_INTERVALS

Point = tuple[datetime, float | None]

# Only the figures the charts draw leave the server: a sample's jsonb holds far more.
# p95 is the figure the rules judge (a probe that timed out counts as at least its limit).
SERIES_SQL = """
    SELECT taken_at,
           (figures #>> '{app,latency,p50_ms}')::float8 AS p50,
           coalesce((figures ->> 'latency_p95_ms')::float8,
                    (figures #>> '{app,latency,p95_ms}')::float8) AS p95,
           (figures #>> '{app,latency,p99_ms}')::float8 AS p99,
           CASE WHEN figures ->> 'primary' IS NOT NULL  -- no busy process: an idle pool
                THEN coalesce((figures ->> 'pool_utilization_pct')::float8, 0) END AS pool
    FROM monitor_samples
    WHERE taken_at > $1 AND taken_at <= $2
    ORDER BY taken_at, id
"""
BACKUPS_SQL = """
    SELECT id, status, started_at, finished_at, size_bytes, duration_s, verified,
           verified_at, node, error
    FROM backups ORDER BY started_at DESC, id DESC LIMIT $1
"""
DRILLS_SQL = """
    SELECT id, kind, started_at, finished_at, ok,
           (report ->> 'write_outage_s')::float8 AS write_outage_s,
           (report ->> 'detection_s')::float8 AS detection_s,
           (report ->> 'promotion_s')::float8 AS promotion_s,
           (report ->> 'lost_writes')::int AS lost_writes,
           report ->> 'old_primary' AS old_primary,
           report ->> 'new_primary' AS new_primary,
           report ->> 'error' AS error
    FROM drills ORDER BY started_at DESC, id DESC LIMIT $1
"""


def with_gaps(rows: list[tuple[datetime, float | None]], max_gap_s: float) -> list[Point]:
    """The points, with a None wherever samples are further apart than `max_gap_s`, so a
    chart breaks the line where the monitor was not running instead of bridging it."""
    out: list[Point] = []
    for moment, value in rows:
        if out and (moment - out[-1][0]).total_seconds() > max_gap_s:
            out.append((out[-1][0] + timedelta(seconds=max_gap_s), None))
        out.append((moment, value))
    return out


async def series(db: Database, settings: Settings, *, since: datetime,
                 until: datetime) -> dict[str, Any]:
    """Latency p50/p95/p99 (ms) and pool utilization (%) from the stored samples."""
    rows = await db.fetch(SERIES_SQL, since, until)
    gap = GAP_INTERVALS * settings.monitor_interval_s

    def line(column: str) -> list[Point]:
        return with_gaps([(r["taken_at"], r[column]) for r in rows], gap)

    return {
        "since": since, "until": until, "samples": len(rows),
        "last_sample_at": rows[-1]["taken_at"] if rows else None,
        "latency_ms": {"p50": line("p50"), "p95": line("p95"), "p99": line("p99")},
        "pool_pct": {"pool utilization": line("pool")},
    }


async def latest_backups(db: Database, settings: Settings, *, limit: int = 5
                         ) -> dict[str, Any]:
    """The catalog's newest backups, each marked whether its directory is still on disk."""
    rows, on_disk = await asyncio.gather(db.fetch(BACKUPS_SQL, limit),
                                         asyncio.to_thread(_on_disk, settings))
    items = []
    for r in rows:
        item = dict(r)
        item["error"] = redact(item["error"]) if item["error"] else None
        item["on_disk"] = None if on_disk is None else item["id"] in on_disk
        item["restorable"] = item["status"] == "ok" and item["on_disk"] is not False
        items.append(item)
    return {"items": items}


def _on_disk(settings: Settings) -> set[str] | None:
    """Ids of the complete backups on this machine; None when there is no local cluster
    to look in (another provider keeps its backups elsewhere)."""
    try:
        return set(store.finished(store.site(settings)))
    except (CardmintError, OSError, KeyError):
        return None


async def latest_drills(db: Database, *, limit: int = 5) -> dict[str, Any]:
    rows = await db.fetch(DRILLS_SQL, limit)
    items = [dict(r) | {"error": redact(r["error"]) if r["error"] else None} for r in rows]
    return {"items": items}
