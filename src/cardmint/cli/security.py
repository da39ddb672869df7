"""`cardmint security ...`: the monthly audit and the quarterly credential rotation."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit

app = typer.Typer(help="Security audit and credential rotation.", no_args_is_help=True)
STYLE = {"P0": "bold red", "P1": "red", "P2": "yellow"}


@app.command()
def audit(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Roles, privileges, pg_hba rules, password storage, TLS and sessions.
    Exit 0 clean, 1 only P2 findings, 2 a P1 or P0 finding."""
    from cardmint.ops.security import audit as run_audit

    report = run(run_audit(settings(home)))

    def render(d: dict[str, Any]) -> None:
        if not d["findings"]:
            console.print("[green]audit clean[/]: no findings")
        else:
            table = Table(title=f"security audit: {d['status']}")
            for col in ("severity", "finding", "object", "detail", "fix"):
                table.add_column(col, overflow="fold")
            for f in d["findings"]:
                table.add_row(f"[{STYLE[f['severity']]}]{f['severity']}[/]", f["id"],
                              f["object"], f["detail"], f["fix"])
            console.print(table)
        sessions = Table(title="connections")
        for col in ("user", "application", "client", "count"):
            sessions.add_column(col)
        for c in d["connections"]:
            sessions.add_row(c["user"], c["application"], c["client_addr"], str(c["count"]))
        console.print(sessions)

    emit(report.to_dict(), as_json, render)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


