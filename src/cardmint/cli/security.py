"""`cardmint security ...`: the monthly audit and the quarterly credential rotation."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit

app = typer.Typer(help="Security audit and credential rotation.", no_args_is_help=True)
STYLE = {"P0": "bold red", "P1": "red", "P2": "yellow"}


@app.command()
def audit(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Roles and memberships, privileges in every schema, functions, extensions; on every
    node pg_hba rules, logging settings, passwords in logs and pg_stat_statements,
    sessions; secrets at rest; API tokens. Exit 0 clean, 1 only P2 findings, 2 a P1 or P0
    finding."""
    from cardmint.ops.security.audit import audit as run_audit

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
        sessions = Table(title=f"connections (nodes audited: {', '.join(d['nodes'])})")
        for col in ("node", "user", "application", "client", "count"):
            sessions.add_column(col)
        for c in d["connections"]:
            sessions.add_row(c["node"], c["user"], c["application"], c["client_addr"],
                             str(c["count"]))
        console.print(sessions)

    emit(report.to_dict(), as_json, render)
    if report.exit_code:
        raise typer.Exit(report.exit_code)




@app.command()
def rotate(
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="Role to rotate (repeatable; default: every login role).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Run outside a maintenance window.")] = False,
    show: Annotated[bool, typer.Option(
        "--show", help="Print the new passwords (they are never printed otherwise).")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The quarterly rotation: new passwords, verified, with zero downtime."""
    from cardmint.ops import security

    report = run(security.rotate(settings(home), role or None, force=force, show=show))

    def render(d: dict[str, Any]) -> None:
        for r in d["rotations"]:
            mark = "[green]rotated[/]" if r["ok"] else "[bold red]FAILED[/]"
            console.print(f"{mark} {r['role']:<20} valid until {r['valid_until'] or '-'}  "
                          f"({r['duration_s']:.2f} s) {r['detail']}"
                          + (f"\n    password: {r['password']}" if "password" in r else ""))
        console.print(f"{'ok' if d['ok'] else 'failed'} in {d['duration_s']:.2f} s")

    emit(report.to_dict(), as_json, render)
    if not report.ok:
        raise typer.Exit(2)
