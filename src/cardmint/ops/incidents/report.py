"""The post-incident review as Markdown: the facts from the incident and its timeline,
then the sections the runbook asks people to fill (root cause within 48 h, action items
with owners and due dates, prevention, runbook updates). A pure function: tested on values."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cardmint.clock import format_duration
from cardmint.ops.incidents.severity import get_severity

if TYPE_CHECKING:
    from cardmint.ops.incidents.lifecycle import Event, Incident

ROOT_CAUSE_WITHIN = timedelta(hours=48)


def _time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "—"


def _since_open(incident: Incident, moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return f"{_time(moment)} (after {format_duration(moment - incident.opened_at)})"


def _cell(text: object) -> str:
    """Table cells cannot hold pipes or line breaks."""
    return str(text or "").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _deadline(incident: Incident) -> str:
    response = format_duration(get_severity(incident.severity).response)
    base = f"{_time(incident.deadline_at)} ({response} response)"
    met = incident.response_met
    if met is None:
        return f"{base}: pending"
    if met:
        return f"{base}: **met**"
    if incident.acknowledged_at is not None:
        late = incident.acknowledged_at - incident.deadline_at
        return f"{base}: **missed** by {format_duration(late)}"
    return f"{base}: **missed**, not acknowledged yet (overdue)"


def render_report(incident: Incident, events: list[Event], alerts: list[dict[str, Any]],
                  now: datetime) -> str:
    level = get_severity(incident.severity)
    due = (f"by {_time(incident.resolved_at + ROOT_CAUSE_WITHIN)}" if incident.resolved_at
           else "within 48 h of resolution")
    lines = [
        f"# Post-incident review: incident {incident.id}, {_cell(incident.title)}",
        "",
        f"_Generated {_time(now)} by `cardmint incident report`._",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| Severity | {level.code} {level.label}: {level.description} |",
        f"| Status | {incident.status} |",
        f"| Opened | {_time(incident.opened_at)} |",
        f"| Acknowledged | {_since_open(incident, incident.acknowledged_at)} |",
        f"| Mitigated | {_since_open(incident, incident.mitigated_at)} |",
        f"| Resolved | {_since_open(incident, incident.resolved_at)} |",
        f"| Response deadline | {_deadline(incident)} |",
        f"| Resolution | {_cell(incident.notes) or '—'} |",
        "",
        "## Timeline",
        "",
        "| Time (UTC) | +since open | Event | Actor | Details |",
        "|---|---|---|---|---|",
    ]
    for e in events:
        lines.append(f"| {e.at:%Y-%m-%d %H:%M:%S} | {format_duration(e.at - incident.opened_at)}"
                     f" | {e.kind} | {_cell(e.actor) or '—'} | {_cell(e.message)} |")
    lines += ["", "## Linked alerts", ""]
    if alerts:
        lines += ["| Alert | Severity | Node | Started | Resolved | Message |",
                  "|---|---|---|---|---|---|"]
        for a in alerts:
            lines.append(f"| {a['id']} {_cell(a['name'])} | {a['severity']} | "
                         f"{_cell(a['node']) or '—'} | {_time(a['started_at'])} | "
                         f"{_time(a['resolved_at'])} | {_cell(a['message'])} |")
    else:
        lines.append("None.")
    lines += [
        "",
        "## Root cause",
        "",
        f"_To fill {due} (runbook: root cause analysis within 48 hours)._",
        "",
        "## Action items",
        "",
        "| Action | Owner | Due |",
        "|---|---|---|",
        "| | | |",
        "",
        "## Prevention",
        "",
        "_Measures that keep this from happening again, and their implementation._",
        "",
        "## Runbook updates",
        "",
        "_Changes to RUNBOOK.md from what was learned._",
        "",
    ]
    return "\n".join(lines)
