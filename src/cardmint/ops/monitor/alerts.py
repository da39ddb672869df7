"""The `alerts` table and announcing its changes: what `cardmint monitor` does with the
rules' findings. A condition fires once (one firing row per rule and node), a firing
alert is only touched while it holds, and it resolves when it clears. Each change is
logged (logger `cardmint.alerts`) and POSTed as JSON to an optional webhook; a new P0
opens an incident.

While the database is out of reach, `unrecorded` keeps the same bookkeeping in an
`AlertMemory`, and `reconcile` writes it down once the database is back.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cardmint.db import Database
from cardmint.dsn import redact
from cardmint.ops.incidents import lifecycle
from cardmint.ops.monitor.rules import P0, RULE_NAMES, Finding, Key, transitions

log = logging.getLogger("cardmint.alerts")

WEBHOOK_TIMEOUT_S = 5.0
ACTOR = "cardmint monitor"
ALERT_COLUMNS = ("id, name, node, severity, status, message, value, threshold, "
                 "runbook_section, recommendation, started_at, last_seen_at, resolved_at, "
                 "incident_id")


def plain(value: Any) -> Any:
    """JSON-safe (datetimes as ISO 8601): what jsonb and the webhook can carry."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat()
                                 if isinstance(v, datetime) else str(v)))


@dataclass
class Pending:
    """An alert announced while the database could not record it."""

    finding: Finding
    started_at: datetime
    resolved_at: datetime | None = None


@dataclass
class AlertMemory:
    """What a loop remembers between rounds so an outage of the database neither repeats
    announcements nor loses them: alerts announced but not yet recorded, and the alerts
    the table held firing at the last round that reached it."""

    pending: dict[Key, Pending] = field(default_factory=dict)
    known: set[Key] = field(default_factory=set)


async def list_alerts(db: Database, *, include_resolved: bool = False,
                      limit: int = 200) -> list[dict[str, Any]]:
    """Firing alerts (all with `include_resolved`), firing first, newest first."""
    rows = await db.fetch(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE $1 OR status = 'firing' "
        f"ORDER BY status = 'firing' DESC, started_at DESC, id DESC LIMIT $2",
        include_resolved, limit)
    return [dict(r) for r in rows]


@dataclass
class Changes:
    """What a reconciliation changed: to announce, and P0 rows that need an incident."""

    fired: list[dict[str, Any]] = field(default_factory=list)  # to announce
    resolved: list[dict[str, Any]] = field(default_factory=list)  # to announce
    new_p0: list[dict[str, Any]] = field(default_factory=list)  # rows that need an incident


async def insert(db: Database, f: Finding, started_at: datetime, seen_at: datetime,
                 resolved_at: datetime | None) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"INSERT INTO alerts (name, node, severity, status, message, value, threshold, "
        f"runbook_section, recommendation, started_at, last_seen_at, resolved_at) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        f"ON CONFLICT (name, node) WHERE status = 'firing' DO NOTHING "
        f"RETURNING {ALERT_COLUMNS}",
        f.name, f.node, f.severity, "resolved" if resolved_at else "firing", f.message,
        f.value, f.threshold, f.runbook_section, f.recommendation, started_at, seen_at,
        resolved_at)
    return dict(row) if row else None


async def reconcile(db: Database, findings: list[Finding], now: datetime,
                    memory: AlertMemory | None = None) -> Changes:
    """Bring the monitor's alerts in line with `findings`, recording what `memory`
    announced while the database was out of reach. Run it inside a transaction."""
    memory = memory if memory is not None else AlertMemory()
    pending = memory.pending
    rows = await db.fetch(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'firing' "
                          f"AND name = ANY($1::text[]) FOR UPDATE", sorted(RULE_NAMES))
    firing = {(r["name"], r["node"]): r for r in rows}
    out = Changes()

    def needs_incident(row: dict[str, Any] | None) -> None:
        if row and row["severity"] == P0:
            out.new_p0.append(row)

    # episodes that began and ended while nothing could be written: history only
    for key, p in list(pending.items()):
        if p.resolved_at is None:
            continue
        del pending[key]
        needs_incident(await insert(db, p.finding, p.started_at, p.resolved_at,
                                    p.resolved_at))
    plan = transitions(firing, findings)
    for f in plan.continuing:
        pending.pop(f.key, None)
        await db.execute("UPDATE alerts SET last_seen_at = $2, value = $3, message = $4 "
                         "WHERE id = $1", firing[f.key]["id"], now, f.value, f.message)
    for f in plan.fired:
        announced = pending.pop(f.key, None)
        row = await insert(db, f, announced.started_at if announced else now, now, None)
        if row is not None and announced is None:
            out.fired.append(row)
        needs_incident(row)
    for key in plan.resolved:
        resolved = await db.fetchrow(
            f"UPDATE alerts SET status = 'resolved', resolved_at = $2, last_seen_at = $2 "
            f"WHERE id = $1 AND status = 'firing' RETURNING {ALERT_COLUMNS}",
            firing[key]["id"], now)
        if resolved:
            out.resolved.append(dict(resolved))
    # announced as firing, over before it could be written
    for key, p in list(pending.items()):
        del pending[key]
        row = await insert(db, p.finding, p.started_at, now, now)
        if row:
            out.resolved.append(row)
        needs_incident(row)
    return out


def unrecorded(findings: list[Finding], now: datetime, memory: AlertMemory) -> Changes:
    """Announce changes while the database is out of reach, remembering them for later:
    alerts the table already holds firing are not announced again."""
    current = {f.key: f for f in findings}
    out = Changes()
    for key, f in current.items():
        p = memory.pending.get(key)
        if (p is None and key in memory.known) or (p is not None and p.resolved_at is None):
            continue
        # a new episode (one that began and ended in this outage is replaced: rare)
        memory.pending[key] = Pending(f, now)
        out.fired.append(as_alert(f, now, None))
    for key, p in memory.pending.items():
        if p.resolved_at is None and key not in current:
            p.resolved_at = now
            out.resolved.append(as_alert(p.finding, p.started_at, now))
    return out


def as_alert(f: Finding, started_at: datetime | None,
             resolved_at: datetime | None) -> dict[str, Any]:
    return {"id": None, **f.to_dict(), "status": "resolved" if resolved_at else "firing",
            "started_at": started_at, "last_seen_at": resolved_at or started_at,
            "resolved_at": resolved_at, "incident_id": None}


# -- announcing -----------------------------------------------------------------------


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "cardmint-monitor"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
        response.read(65536)


def _deliver(url: str, payload: dict[str, Any]) -> bool:
    """POST one transition; a failure is logged (naming the host only: the URL may hold a
    token), never raised."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        log.warning("alert webhook ignored: only http and https URLs are accepted")
        return False
    try:
        _post(url, json.dumps(plain(payload)).encode())
        return True
    except (OSError, ValueError, http.client.HTTPException) as exc:
        log.warning("alert webhook to %s failed: %s", parts.hostname,
                    redact(str(exc)) or type(exc).__name__)
        return False


async def announce(changes: Changes, *, webhook: str | None, stored: bool) -> None:
    for event, alerts in (("firing", changes.fired), ("resolved", changes.resolved)):
        for a in alerts:
            level = logging.INFO if event == "resolved" else \
                logging.WARNING if a["severity"] == "P2" else logging.ERROR
            node = f" on {a['node']}" if a["node"] else ""
            log.log(level, "%s %s %s%s: %s | runbook: %s | %s%s", event.upper(), a["severity"],
                    a["name"], node, a["message"], a["runbook_section"],
                    a["recommendation"], "" if stored else " (not stored: database unreachable)")
    if webhook:
        payloads = [{"event": event, "source": ACTOR, "stored": stored, "alert": a}
                    for event, alerts in (("firing", changes.fired),
                                          ("resolved", changes.resolved)) for a in alerts]
        await asyncio.gather(*(asyncio.to_thread(_deliver, webhook, p) for p in payloads))


async def open_incidents(db: Database, rows: list[dict[str, Any]], now: datetime) -> list[int]:
    opened = []
    for row in rows:
        node = f" on {row['node']}" if row["node"] else ""
        incident = await lifecycle.open_incident(
            db, row["severity"], f"{row['name']}{node}: {row['message']}"[:300], now=now,
            actor=ACTOR)
        await lifecycle.link_alert(db, incident.id, row["id"], now=now, actor=ACTOR)
        opened.append(incident.id)
    return opened
