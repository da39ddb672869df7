"""Incidents: open, note, acknowledge, mitigate, resolve; overdue against the runbook's
response times; the post-incident review as Markdown (see incident_report.py).

Every state change and its `incident_events` row are written in one transaction, after
the incident's row is locked and every rule checked, so a refused change writes nothing.
Times come from an injected `now` (the wall clock when none is given).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cardmint.clock import utc
from cardmint.db import Database, one
from cardmint.errors import ValidationError
from cardmint.ops.incidents.report import render_report
from cardmint.ops.incidents.severity import get_severity

BIGINT_MAX = 2**63 - 1

COLUMNS = ("id, title, severity, status, opened_at, acknowledged_at, mitigated_at, "
           "resolved_at, deadline_at, notes")


@dataclass
class Incident:
    id: int
    title: str
    severity: str
    status: str  # open | mitigated | resolved
    opened_at: datetime
    acknowledged_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    deadline_at: datetime
    notes: str | None
    overdue: bool  # not acknowledged by deadline_at and not resolved, as of `now`

    @property
    def response_met(self) -> bool | None:
        """Acknowledged by the deadline: True or False, None while it still may be."""
        if self.acknowledged_at is not None:
            return self.acknowledged_at <= self.deadline_at
        return False if self.overdue or self.resolved_at is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "response_met": self.response_met}


@dataclass
class Event:
    id: int
    incident_id: int
    at: datetime
    kind: str  # opened | acknowledged | note | mitigated | resolved | alert
    message: str
    actor: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_overdue(acknowledged_at: datetime | None, resolved_at: datetime | None,
               deadline_at: datetime, now: datetime) -> bool:
    return acknowledged_at is None and resolved_at is None and now > deadline_at


def _incident(row: Any, now: datetime) -> Incident:
    fields = dict(row)
    fields["overdue"] = is_overdue(row["acknowledged_at"], row["resolved_at"],
                                   row["deadline_at"], now)
    return Incident(**fields)


def _check_id(incident_id: int) -> int:
    if isinstance(incident_id, bool) or not isinstance(incident_id, int) \
            or not 0 < incident_id <= BIGINT_MAX:
        raise ValidationError(f"incident_id must be a positive integer, not {incident_id!r}",
                              field="incident_id")
    return incident_id


def _text(value: str | None, field: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ValidationError(f"{field} must not be empty", field=field)
    return text


async def _event(db: Database, incident_id: int, at: datetime, kind: str, message: str,
                 actor: str | None) -> None:
    await db.execute(
        "INSERT INTO incident_events (incident_id, at, kind, message, actor) "
        "VALUES ($1, $2, $3, $4, $5)", incident_id, at, kind, message, actor)


async def _locked(db: Database, incident_id: int, now: datetime) -> Incident:
    """The incident's row, locked until the transaction ends (concurrent changes queue)."""
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM incidents WHERE id = $1 FOR UPDATE",
                            _check_id(incident_id))
    if row is None:
        raise ValidationError(f"incident_id: no incident {incident_id}", field="incident_id")
    incident = _incident(row, now)
    if now < incident.opened_at:
        raise ValidationError(f"now ({now:%Y-%m-%d %H:%M:%S} UTC) is before incident "
                              f"{incident_id} was opened", field="now")
    return incident


def _refuse_if_resolved(incident: Incident, doing: str) -> None:
    if incident.status == "resolved":
        raise ValidationError(f"cannot {doing} incident {incident.id}: its status is "
                              f"resolved (at {incident.resolved_at:%Y-%m-%d %H:%M} UTC)",
                              field="status")


async def _implied_ack(db: Database, incident: Incident, now: datetime, actor: str | None,
                       by: str) -> None:
    """Mitigating or resolving is a response: record the acknowledgement it implies, so
    the response deadline and the timeline stay truthful."""
    if incident.acknowledged_at is None:
        await db.execute("UPDATE incidents SET acknowledged_at = $2 WHERE id = $1",
                         incident.id, now)
        await _event(db, incident.id, now, "acknowledged", f"implied by {by}", actor)


# -- public API ---------------------------------------------------------------------------


async def open_incident(db: Database, severity: str, title: str, *,
                        now: datetime | None = None, actor: str | None = None) -> Incident:
    """Open an incident; its response deadline is opened_at plus the severity's response."""
    level = get_severity(severity)
    title = _text(title, "title")
    now = utc(now)
    async with db.transaction():
        row = one(await db.fetchrow(
            f"INSERT INTO incidents (title, severity, opened_at, deadline_at) "
            f"VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}",
            title, level.code, now, level.deadline(now)))
        await _event(db, row["id"], now, "opened", f"{level.code} {level.label}: {title}",
                     actor)
    return _incident(row, now)


async def add_note(db: Database, incident_id: int, text: str, *,
                   now: datetime | None = None, actor: str | None = None) -> Incident:
    """Add a note to the timeline (also after resolution: findings keep coming)."""
    text = _text(text, "text")
    now = utc(now)
    async with db.transaction():
        incident = await _locked(db, incident_id, now)
        await _event(db, incident.id, now, "note", text, actor)
    return incident


async def acknowledge(db: Database, incident_id: int, *, now: datetime | None = None,
                      actor: str | None = None) -> Incident:
    now = utc(now)
    async with db.transaction():
        incident = await _locked(db, incident_id, now)
        _refuse_if_resolved(incident, "acknowledge")
        if incident.acknowledged_at is not None:
            raise ValidationError(
                f"incident {incident.id} was already acknowledged at "
                f"{incident.acknowledged_at:%Y-%m-%d %H:%M} UTC", field="acknowledged_at")
        await db.execute("UPDATE incidents SET acknowledged_at = $2 WHERE id = $1",
                         incident.id, now)
        late = "" if now <= incident.deadline_at else " (after the response deadline)"
        await _event(db, incident.id, now, "acknowledged", f"acknowledged{late}", actor)
    return await get(db, incident.id, now=now)


async def mitigate(db: Database, incident_id: int, *, note: str | None = None,
                   now: datetime | None = None, actor: str | None = None) -> Incident:
    now = utc(now)
    async with db.transaction():
        incident = await _locked(db, incident_id, now)
        _refuse_if_resolved(incident, "mitigate")
        if incident.status == "mitigated":
            raise ValidationError(f"incident {incident.id} is already mitigated",
                                  field="status")
        await _implied_ack(db, incident, now, actor, "mitigation")
        await db.execute("UPDATE incidents SET status = 'mitigated', mitigated_at = $2 "
                         "WHERE id = $1", incident.id, now)
        await _event(db, incident.id, now, "mitigated", (note or "").strip(), actor)
    return await get(db, incident.id, now=now)


async def close(db: Database, incident_id: int, *, note: str | None = None,
                now: datetime | None = None, actor: str | None = None) -> Incident:
    """Resolve the incident; `note` (the resolution) goes to its notes and the timeline."""
    note = (note or "").strip()
    now = utc(now)
    async with db.transaction():
        incident = await _locked(db, incident_id, now)
        _refuse_if_resolved(incident, "close")
        await _implied_ack(db, incident, now, actor, "resolution")
        await db.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = $2, "
            "notes = coalesce(nullif($3, ''), notes) WHERE id = $1", incident.id, now, note)
        await _event(db, incident.id, now, "resolved", note, actor)
    return await get(db, incident.id, now=now)


async def link_alert(db: Database, incident_id: int, alert_id: int, *,
                     now: datetime | None = None, actor: str | None = None) -> Incident:
    """Attach an alert to the incident (alerts.incident_id) with an `alert` timeline entry."""
    now = utc(now)
    async with db.transaction():
        incident = await _locked(db, incident_id, now)
        alert = await db.fetchrow(
            "UPDATE alerts SET incident_id = $2 WHERE id = $1 "
            "RETURNING name, severity, node, message", alert_id, incident.id)
        if alert is None:
            raise ValidationError(f"alert_id: no alert {alert_id}", field="alert_id")
        node = f" on {alert['node']}" if alert["node"] else ""
        await _event(db, incident.id, now, "alert",
                     f"{alert['severity']} {alert['name']}{node}: {alert['message']}", actor)
    return incident


async def get(db: Database, incident_id: int, *, now: datetime | None = None) -> Incident:
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM incidents WHERE id = $1",
                            _check_id(incident_id))
    if row is None:
        raise ValidationError(f"incident_id: no incident {incident_id}", field="incident_id")
    return _incident(row, utc(now))


async def list_incidents(db: Database, *, include_closed: bool = False,
                         now: datetime | None = None, limit: int = 200) -> list[Incident]:
    """Open and mitigated incidents (all with `include_closed`), newest first."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM incidents WHERE $1 OR status <> 'resolved' "
        f"ORDER BY opened_at DESC, id DESC LIMIT $2", include_closed, limit)
    now = utc(now)
    return [_incident(r, now) for r in rows]


async def timeline(db: Database, incident_id: int) -> list[Event]:
    rows = await db.fetch(
        "SELECT id, incident_id, at, kind, message, actor FROM incident_events "
        "WHERE incident_id = $1 ORDER BY at, id", _check_id(incident_id))
    return [Event(**dict(r)) for r in rows]


async def linked_alerts(db: Database, incident_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, name, severity, status, message, node, started_at, resolved_at "
        "FROM alerts WHERE incident_id = $1 ORDER BY started_at, id", _check_id(incident_id))
    return [dict(r) for r in rows]


async def report_markdown(db: Database, incident_id: int, now: datetime | None = None) -> str:
    """The post-incident review (runbook: Post-Incident Review) as Markdown."""
    now = utc(now)
    incident = await get(db, incident_id, now=now)
    events = await timeline(db, incident.id)
    alerts = await linked_alerts(db, incident.id)
    return render_report(incident, events, alerts, now)
