"""`cardmint maintenance ...`: the runbook's maintenance windows.

Disruptive commands take `force: ForceOpt = False` and call
`require_window("<action>", force=force)` before doing anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from cardmint.cli.common import JsonOpt
from cardmint.cli.output import console, emit
from cardmint.clock import format_duration
from cardmint.errors import ValidationError
from cardmint.ops import maintenance

ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Run now even outside a maintenance window.")]

app = typer.Typer(help="Maintenance windows (weekly Sunday 02-04 UTC, first Saturday 01-06 UTC).",
                  no_args_is_help=True)


def _parse_at(at: str | None) -> datetime | None:
    if at is None:
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise ValidationError(f"--at: not an ISO 8601 time: {at!r}", field="at") from None
    if moment.tzinfo is None:
        raise ValidationError("--at needs a time zone, e.g. 2025-06-01T02:30+00:00",
                              field="at")
    return moment


@app.command()
def status(
    at: Annotated[str | None, typer.Option(
        help="Check this ISO 8601 time instead of now (with a zone).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Whether now is inside a maintenance window, and when the next one begins."""
    report = maintenance.status(_parse_at(at))

    def render(d: dict[str, Any]) -> None:
        if d["in_window"]:
            w = d["window"]
            console.print(f"[green]in the {w['name']} window[/] until "
                          f"{w['ends_at']:%H:%M} UTC ({format_duration(d['seconds_left'])} left)")
        else:
            console.print("[yellow]outside maintenance windows[/]: disruptive commands need "
                          "--force")
        table = Table(title="next window")
        for col in ("name", "starts (UTC)", "ends (UTC)", "in"):
            table.add_column(col, no_wrap=True)
        n = d["next"]
        table.add_row(n["name"], f"{n['starts_at']:%a %Y-%m-%d %H:%M}",
                      f"{n['ends_at']:%a %Y-%m-%d %H:%M}",
                      format_duration(d["seconds_until_next"]))
        console.print(table)

    emit(report, as_json, render)
