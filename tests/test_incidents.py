"""Incidents against the session cluster: the life cycle and its timeline, response
deadlines and overdue with an injected clock, the post-incident review, clean refusals,
and `cardmint incident ...` as a person or a script runs it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cardmint.db import Database, schema
from cardmint.errors import ValidationError
from cardmint.ops.incidents import lifecycle
from cardmint.ops.incidents.severity import SEVERITIES, get_severity, most_severe
from support import TestCluster
from test_cli import cardmint, no_traceback

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def unique(label: str) -> str:
    return f"test {label} {uuid.uuid4().hex[:10]}"


@pytest.fixture
async def cleanup(db: Database) -> AsyncIterator[list[int]]:
    """Ids to delete after the test (events go with them); the database is shared."""
    ids: list[int] = []
    yield ids
    await db.execute("DELETE FROM incidents WHERE id = ANY($1::bigint[])", ids)


async def counts(db: Database) -> tuple[int, int]:
    row = await db.fetchrow("SELECT (SELECT count(*) FROM incidents) AS i, "
                            "(SELECT count(*) FROM incident_events) AS e")
    return row["i"], row["e"]


# -- the severity table ---------------------------------------------------------------------


def test_severity_table_matches_the_runbook_and_the_schema() -> None:
    assert tuple(SEVERITIES) == schema.SEVERITIES
    assert {c: s.response for c, s in SEVERITIES.items()} == {
        "P0": 15 * MIN, "P1": timedelta(hours=1), "P2": timedelta(hours=4)}
    assert "outage" in SEVERITIES["P0"].description
    assert "no user impact" in SEVERITIES["P2"].description
    assert get_severity(" p1 ").code == "P1"
    assert get_severity("P0").deadline(T0) == T0 + 15 * MIN
    assert most_severe([None, "P2", "P0", "P1"]) == "P0" and most_severe([None]) is None
    with pytest.raises(ValidationError) as caught:
        get_severity("P3")
    assert caught.value.field == "severity"


# -- the life cycle ---------------------------------------------------------------------------


async def test_open_note_ack_close_keeps_the_timeline_in_order(db: Database,
                                                              cleanup: list[int]) -> None:
    title = unique("replica lag")
    opened = await lifecycle.open_incident(db, "P1", f"  {title} ", now=T0, actor="ana")
    cleanup.append(opened.id)
    assert (opened.title, opened.severity, opened.status) == (title, "P1", "open")
    assert opened.deadline_at == T0 + timedelta(hours=1) and opened.overdue is False

    await lifecycle.add_note(db, opened.id, "lag 45 s on node2", now=T0 + 5 * MIN, actor="ana")
    acked = await lifecycle.acknowledge(db, opened.id, now=T0 + 10 * MIN, actor="bo")
    assert acked.acknowledged_at == T0 + 10 * MIN and acked.response_met is True
    closed = await lifecycle.close(db, opened.id, note="replica rebuilt", now=T0 + 50 * MIN,
                                   actor="bo")
    assert closed.status == "resolved" and closed.resolved_at == T0 + 50 * MIN
    assert closed.notes == "replica rebuilt"

    events = await lifecycle.timeline(db, opened.id)
    assert [(e.kind, e.at - T0, e.actor) for e in events] == [
        ("opened", timedelta(0), "ana"), ("note", 5 * MIN, "ana"),
        ("acknowledged", 10 * MIN, "bo"), ("resolved", 50 * MIN, "bo")]
    assert events[1].message == "lag 45 s on node2"
    assert events[3].message == "replica rebuilt"
    assert (await lifecycle.get(db, opened.id)).to_dict()["status"] == "resolved"


async def test_mitigate_then_close_and_the_implied_acknowledgement(db: Database,
                                                                    cleanup: list[int]) -> None:
    incident = await lifecycle.open_incident(db, "P0", unique("outage"), now=T0)
    cleanup.append(incident.id)
    mitigated = await lifecycle.mitigate(db, incident.id, note="failed over",
                                         now=T0 + 20 * MIN)
    # mitigating is a response, but past the P0's 15 minutes
    assert mitigated.status == "mitigated" and mitigated.acknowledged_at == T0 + 20 * MIN
    assert mitigated.response_met is False and mitigated.overdue is False
    with pytest.raises(ValidationError, match="already mitigated"):
        await lifecycle.mitigate(db, incident.id, now=T0 + 21 * MIN)
    await lifecycle.close(db, incident.id, now=T0 + 30 * MIN)
    kinds = [(e.kind, e.message) for e in await lifecycle.timeline(db, incident.id)]
    assert kinds == [("opened", f"P0 Critical: {incident.title}"),
                     ("acknowledged", "implied by mitigation"), ("mitigated", "failed over"),
                     ("resolved", "")]


@pytest.mark.parametrize("severity, minutes", [("P0", 15), ("P1", 60), ("P2", 240)])
async def test_deadline_and_overdue_follow_the_injected_clock(
        db: Database, cleanup: list[int], severity: str, minutes: int) -> None:
    incident = await lifecycle.open_incident(db, severity, unique("deadline"), now=T0)
    cleanup.append(incident.id)
    deadline = T0 + minutes * MIN
    assert incident.deadline_at == deadline

    async def listed(now: datetime) -> lifecycle.Incident:
        found = await lifecycle.list_incidents(db, now=now)
        return next(i for i in found if i.id == incident.id)

    assert (await listed(deadline)).overdue is False  # due by the deadline, not before
    assert (await listed(deadline)).response_met is None
    late = await listed(deadline + timedelta(seconds=1))
    assert late.overdue is True and late.response_met is False
    assert (await lifecycle.get(db, incident.id, now=deadline + MIN)).overdue is True

    acked = await lifecycle.acknowledge(db, incident.id, now=deadline + 2 * MIN)
    assert acked.overdue is False and acked.response_met is False
    assert (await lifecycle.timeline(db, incident.id))[-1].message == \
        "acknowledged (after the response deadline)"


async def test_resolved_incidents_are_listed_only_with_include_closed(
        db: Database, cleanup: list[int]) -> None:
    a = await lifecycle.open_incident(db, "P2", unique("open one"), now=T0)
    b = await lifecycle.open_incident(db, "P2", unique("closed one"), now=T0 + MIN)
    cleanup += [a.id, b.id]
    await lifecycle.close(db, b.id, now=T0 + 2 * MIN)
    never_acked = await lifecycle.get(db, b.id, now=T0 + timedelta(days=1))
    assert never_acked.overdue is False  # resolved incidents are never overdue
    open_ids = {i.id for i in await lifecycle.list_incidents(db, now=T0 + 3 * MIN)}
    all_ids = {i.id for i in await lifecycle.list_incidents(db, include_closed=True,
                                                           now=T0 + 3 * MIN)}
    assert a.id in open_ids and b.id not in open_ids and {a.id, b.id} <= all_ids


async def test_concurrent_acknowledgements_let_one_win(db: Database,
                                                       cleanup: list[int]) -> None:
    incident = await lifecycle.open_incident(db, "P1", unique("race"), now=T0)
    cleanup.append(incident.id)
    results = await asyncio.gather(
        *(lifecycle.acknowledge(db, incident.id, now=T0 + MIN, actor=f"op{n}")
          for n in range(2)), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Incident", "ValidationError"]
    kinds = [e.kind for e in await lifecycle.timeline(db, incident.id)]
    assert kinds == ["opened", "acknowledged"]


# -- refusals write nothing -------------------------------------------------------------------


@pytest.mark.parametrize("severity, title, field", [
    ("P3", "disk full", "severity"),
    ("", "disk full", "severity"),
    ("P1", "", "title"),
    ("P1", "   ", "title"),
])
async def test_bad_input_is_refused_before_any_write(db: Database, severity: str, title: str,
                                                     field: str) -> None:
    before = await counts(db)
    with pytest.raises(ValidationError) as caught:
        await lifecycle.open_incident(db, severity, title, now=T0)
    assert caught.value.field == field and field in str(caught.value)
    assert await counts(db) == before


async def test_refused_changes_write_nothing(db: Database, cleanup: list[int]) -> None:
    incident = await lifecycle.open_incident(db, "P2", unique("refusals"), now=T0)
    cleanup.append(incident.id)
    await lifecycle.acknowledge(db, incident.id, now=T0 + MIN)
    await lifecycle.close(db, incident.id, now=T0 + 2 * MIN)
    before = await counts(db)
    refusals = [
        (lifecycle.close(db, incident.id, now=T0 + 3 * MIN), "status"),
        (lifecycle.acknowledge(db, incident.id, now=T0 + 3 * MIN), "status"),
        (lifecycle.mitigate(db, incident.id, now=T0 + 3 * MIN), "status"),
        (lifecycle.add_note(db, incident.id, "  ", now=T0 + 3 * MIN), "text"),
        (lifecycle.add_note(db, incident.id, "too early", now=T0 - MIN), "now"),
        (lifecycle.close(db, 2**62, now=T0), "incident_id"),
        (lifecycle.acknowledge(db, 0), "incident_id"),
        (lifecycle.get(db, 2**62), "incident_id"),
        (lifecycle.open_incident(db, "P1", "naive", now=datetime(2025, 1, 1)), "now"),
    ]
    for call, field in refusals:
        with pytest.raises(ValidationError) as caught:
            await call
        assert caught.value.field == field, caught.value
    assert await counts(db) == before
    # a note after resolution is fine: findings keep coming
    await lifecycle.add_note(db, incident.id, "root cause: full WAL volume", now=T0 + 3 * MIN)


# -- the post-incident review -----------------------------------------------------------------


async def test_report_has_the_summary_timeline_alerts_and_sections(
        db: Database, cleanup: list[int]) -> None:
    incident = await lifecycle.open_incident(db, "P0", unique("primary down | writes fail"),
                                             now=T0, actor="ana")
    cleanup.append(incident.id)
    alert_name = unique("connectivity").replace(" ", "_")
    alert_id = await db.fetchval(
        "INSERT INTO alerts (name, severity, message, node, started_at) "
        "VALUES ($1, 'P0', 'primary unreachable', 'node1', $2) RETURNING id", alert_name, T0)
    try:
        await lifecycle.link_alert(db, incident.id, alert_id, now=T0 + MIN)
        await lifecycle.acknowledge(db, incident.id, now=T0 + 4 * MIN, actor="bo")
        await lifecycle.add_note(db, incident.id, "promoted node2\nwrites back",
                                 now=T0 + 9 * MIN, actor="bo")
        await lifecycle.close(db, incident.id, note="failover to node2", now=T0 + 75 * MIN)
        report = await lifecycle.report_markdown(db, incident.id, now=T0 + timedelta(days=1))
    finally:
        await db.execute("DELETE FROM alerts WHERE id = $1", alert_id)

    assert report.startswith(f"# Post-incident review: incident {incident.id}")
    assert "primary down \\| writes fail" in report  # pipes escaped for the tables
    for heading in ("## Summary", "## Timeline", "## Linked alerts", "## Root cause",
                    "## Action items", "## Prevention", "## Runbook updates"):
        assert f"\n{heading}\n" in report, heading
    assert "| Severity | P0 Critical: Complete outage, data loss risk |" in report
    assert "| Acknowledged | 2025-03-04 10:04:00 UTC (after 4 min) |" in report
    assert "| Resolved | 2025-03-04 11:15:00 UTC (after 1 h 15 min) |" in report
    assert "(15 min response): **met**" in report
    assert "| Resolution | failover to node2 |" in report
    assert "by 2025-03-06 11:15:00 UTC" in report  # root cause within 48 h
    assert "| Action | Owner | Due |" in report
    timeline = report.split("## Timeline")[1].split("## Linked alerts")[0]
    rows = [line for line in timeline.splitlines() if line.startswith("| 2025")]
    assert [r.split(" | ")[2] for r in rows] == ["opened", "alert", "acknowledged", "note",
                                                 "resolved"]
    assert "promoted node2<br>writes back" in rows[3]
    alerts = report.split("## Linked alerts")[1].split("## Root cause")[0]
    assert alert_name in alerts and "primary unreachable" in alerts and "node1" in alerts


async def test_report_of_an_open_overdue_incident(db: Database, cleanup: list[int]) -> None:
    incident = await lifecycle.open_incident(db, "P1", unique("slow"), now=T0)
    cleanup.append(incident.id)
    report = await lifecycle.report_markdown(db, incident.id, now=T0 + 2 * 60 * MIN)
    assert "**missed**, not acknowledged yet (overdue)" in report
    assert "within 48 h of resolution" in report
    assert "\n## Linked alerts\n\nNone.\n" in report


# -- the command line -------------------------------------------------------------------------


def take(path: Path) -> str:
    """A written report's text; the file is removed (the cluster home is shared)."""
    text = path.read_text()
    path.unlink()
    return text


def created_id(done: object) -> int:
    assert done.returncode == 0, (done.stdout, done.stderr)  # type: ignore[attr-defined]
    return json.loads(done.stdout)["id"]  # type: ignore[attr-defined]


async def test_cli_life_cycle_and_report(pg: TestCluster, db: Database, cleanup: list[int],
                                         tmp_path: Path) -> None:
    title = unique("cli storage")
    done = cardmint(pg, "incident", "open", "--severity", "P2", "--title", title, "--json",
                    "--actor", "cli-test")
    incident_id = created_id(done)
    cleanup.append(incident_id)
    opened = json.loads(done.stdout)
    assert opened["severity"] == "P2" and opened["status"] == "open"
    assert opened["overdue"] is False and opened["response_met"] is None

    for args in (("note", str(incident_id), "storage at 91%"), ("ack", str(incident_id)),
                 ("close", str(incident_id), "--note", "volume extended")):
        step = cardmint(pg, "incident", *args)
        assert step.returncode == 0, step.stderr
        assert f"incident {incident_id}" in step.stdout
    events = await lifecycle.timeline(db, incident_id)
    assert [e.kind for e in events] == ["opened", "note", "acknowledged", "resolved"]
    assert events[0].actor == "cli-test" and events[1].actor  # defaults to the OS user

    done = cardmint(pg, "incident", "report", str(incident_id), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    path = Path(report["path"])
    assert path == pg.home / "incidents" / f"incident-{incident_id}.md"
    assert take(path) == report["markdown"] and "## Root cause" in report["markdown"]

    out = tmp_path / "review.md"
    done = cardmint(pg, "incident", "report", str(incident_id), "--out", str(out))
    assert done.returncode == 0 and done.stdout.strip() == str(out)
    assert "volume extended" in take(out)


async def test_cli_list_flags_overdue_and_exits_1(pg: TestCluster, db: Database,
                                                  cleanup: list[int]) -> None:
    stale = await lifecycle.open_incident(db, "P0", unique("overdue [bold]x[/]"), now=T0)
    cleanup.append(stale.id)
    done = cardmint(pg, "incident", "list", "--json")
    assert done.returncode == 1, done.stderr
    listed = json.loads(done.stdout)
    mine = next(i for i in listed["incidents"] if i["id"] == stale.id)
    assert mine["overdue"] is True and listed["overdue"] >= 1
    people = cardmint(pg, "incident", "list")
    assert people.returncode == 1 and "OVERDUE" in people.stdout
    assert "[bold]x[/]" in people.stdout  # titles are shown, not taken as markup

    await lifecycle.close(db, stale.id)
    done = cardmint(pg, "incident", "list", "--all", "--json")
    listed = json.loads(done.stdout)
    assert any(i["id"] == stale.id and i["status"] == "resolved" for i in listed["incidents"])
    # exit 1 exactly when an overdue incident is shown (other tests may leave some)
    assert done.returncode == (1 if any(i["overdue"] for i in listed["incidents"]) else 0)


@pytest.mark.parametrize("args, field", [
    (("open", "--severity", "P5", "--title", "{title}"), "severity"),
    (("open", "--severity", "P1", "--title", ""), "title"),
    (("open", "--severity", "P1", "--title", "   "), "title"),
    (("ack", "999999999999"), "incident_id"),
    (("close", "999999999999", "--note", "{title}"), "incident_id"),
    (("note", "999999999999", "{title}"), "incident_id"),
    (("report", "999999999999"), "incident_id"),
])
async def test_cli_refusals_exit_3_without_a_write(pg: TestCluster, db: Database,
                                                   args: tuple[str, ...], field: str) -> None:
    title = unique("refused")
    before = await counts(db)
    done = cardmint(pg, "incident", *(a.format(title=title) for a in args), "--json")
    assert done.returncode == 3, (done.stdout, done.stderr)
    no_traceback(done)
    assert json.loads(done.stdout)["ok"] is False and field in done.stderr
    assert await counts(db) == before
    assert await db.fetchval("SELECT count(*) FROM incidents WHERE title = $1", title) == 0


def test_cli_without_required_options_exits_3(pg: TestCluster) -> None:
    done = cardmint(pg, "incident", "open", "--title", "no severity")
    assert done.returncode == 3
    no_traceback(done)
