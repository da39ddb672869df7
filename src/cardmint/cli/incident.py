"""`cardmint incident ...`: open, annotate, acknowledge, mitigate, close, list and
report incidents (runbook: Incident Response)."""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import OK, WARN, console, emit
from cardmint.clock import format_duration, utc
from cardmint.db import Database
from cardmint.ops.incidents import lifecycle
from cardmint.ops.incidents.lifecycle import Incident

T = TypeVar("T")

app = typer.Typer(help="Incidents with the runbook's severities and response deadlines.",
                  no_args_is_help=True)

IdArg = Annotated[int, typer.Argument(help="The incident's id.", show_default=False)]
ActorOpt = Annotated[str | None, typer.Option(
    help="Who did it (default: the OS user).", show_default=False)]


def _actor(actor: str | None) -> str | None:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return None


def _with_db(home: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    async def go() -> T:
        # Primary only: incidents are written there, and a replica that is down (likely,
        # during an incident) must not slow the command.
        db = Database(settings(home), replica_dsns=[])
        await db.open(monitor=False)
        try:
            return await work(db)
        finally:
            await db.close()

    return run(go())


def _line(i: Incident) -> str:
    state = "[bold red]OVERDUE[/] " if i.overdue else ""
    if i.acknowledged_at is None:
        response = f"response due {i.deadline_at:%Y-%m-%d %H:%M} UTC"
    else:
        response = (f"acknowledged {i.acknowledged_at:%Y-%m-%d %H:%M} UTC, "
                    f"{'within' if i.response_met else 'after'} the deadline")
    return f"{state}incident {i.id} {i.severity} {i.status}: {escape(i.title)} ({response})"


def _show(incident: Incident, as_json: bool) -> None:
    emit(incident.to_dict(), as_json, lambda _: console.print(_line(incident), markup=True,
                                                              highlight=False))


@app.command("open")
def open_(
    severity: Annotated[str, typer.Option(help="P0 (outage, data loss risk: 15 min), "
                                               "P1 (user impact: 1 h), P2 (minor: 4 h).",
                                          show_default=False)],
    title: Annotated[str, typer.Option(help="What is wrong, in a line.", show_default=False)],
    actor: ActorOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open an incident; its response deadline follows from the severity."""
    who = _actor(actor)
    _show(_with_db(home, lambda db: lifecycle.open_incident(db, severity, title, actor=who)),
          as_json)


@app.command()
def note(
    incident_id: IdArg,
    text: Annotated[str, typer.Argument(help="The note.", show_default=False)],
    actor: ActorOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a note to an incident's timeline."""
    who = _actor(actor)
    _show(_with_db(home, lambda db: lifecycle.add_note(db, incident_id, text, actor=who)),
          as_json)


@app.command()
def ack(incident_id: IdArg, actor: ActorOpt = None, home: HomeOpt = None,
        as_json: JsonOpt = False) -> None:
    """Acknowledge an incident (the response the deadline asks for)."""
    who = _actor(actor)
    _show(_with_db(home, lambda db: lifecycle.acknowledge(db, incident_id, actor=who)),
          as_json)


@app.command()
def mitigate(
    incident_id: IdArg,
    note: Annotated[str | None, typer.Option(help="What was done.")] = None,
    actor: ActorOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark an incident mitigated (user impact stopped, fix still to come)."""
    who = _actor(actor)
    _show(_with_db(home, lambda db: lifecycle.mitigate(db, incident_id, note=note, actor=who)),
          as_json)


@app.command()
def close(
    incident_id: IdArg,
    note: Annotated[str | None, typer.Option(help="The resolution.")] = None,
    actor: ActorOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve an incident."""
    who = _actor(actor)
    _show(_with_db(home, lambda db: lifecycle.close(db, incident_id, note=note, actor=who)),
          as_json)


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include resolved lifecycle.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open incidents (all with --all); exit 1 when one is overdue."""
    now = utc()
    found = _with_db(home, lambda db: lifecycle.list_incidents(db, include_closed=all_, now=now))
    data = {"now": now, "overdue": sum(i.overdue for i in found),
            "incidents": [i.to_dict() for i in found]}

    def render(_: Any) -> None:
        if not found:
            console.print("no open incidents" if not all_ else "no incidents")
            return
        table = Table(title=f"incidents ({'all' if all_ else 'open'})")
        for col in ("id", "sev", "status", "title", "opened (UTC)", "response due", "ack"):
            table.add_column(col, no_wrap=col != "title")
        for i in found:
            if i.overdue:
                due = f"[bold red]OVERDUE {format_duration(now - i.deadline_at)}[/]"
            elif i.acknowledged_at is None and i.resolved_at is None:
                due = f"in {format_duration(i.deadline_at - now)}"
            else:
                due = "met" if i.response_met else "[yellow]missed[/]"
            acked = f"{i.acknowledged_at:%Y-%m-%d %H:%M}" if i.acknowledged_at else "—"
            row = [str(i.id), i.severity, i.status, escape(i.title),
                   f"{i.opened_at:%Y-%m-%d %H:%M}", due, acked]
            table.add_row(*row, style="red" if i.overdue else None)
        console.print(table)

    emit(data, as_json, render)
    raise typer.Exit(WARN if data["overdue"] else OK)


@app.command()
def report(
    incident_id: IdArg,
    out: Annotated[Path | None, typer.Option(
        help="Where to write (default $CARDMINT_HOME/incidents/incident-<id>.md).",
        show_default=False)] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the post-incident review (Markdown) and print its path."""
    markdown = _with_db(home, lambda db: lifecycle.report_markdown(db, incident_id))
    path = out or settings(home).home / "incidents" / f"incident-{incident_id}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown)
    emit({"path": str(path), "markdown": markdown}, as_json,
         lambda d: console.print(d["path"], markup=False, highlight=False))
