"""`cardmint pooler up|down|status`: PgBouncer in front of the primary."""

from __future__ import annotations

from typing import Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import WARN, console, emit
from cardmint.ops import scaling

app = typer.Typer(help="PgBouncer (transaction pooling) in front of the primary.",
                  no_args_is_help=True)


@app.command()
def up(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Start PgBouncer (or re-target and reload it) and route the application through it."""
    report = run(scaling.pooler(settings(home), "up"))

    def render(d: dict[str, Any]) -> None:
        verb = "started" if d["started"] else "reloaded"
        console.print(f"PgBouncer {verb} on 127.0.0.1:{d['port']} (pid {d['pid']}, "
                      f"{d['pool_mode']} mode, at most {d['max_db_connections']} server "
                      f"connections) in front of {d['target']}; the application's DSN in "
                      "cluster.json now goes through it")

    emit({"ok": True, **report}, as_json, render)


@app.command()
def down(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Route the application straight to the primary again and stop PgBouncer by PID."""
    report = run(scaling.pooler(settings(home), "down"))

    def render(d: dict[str, Any]) -> None:
        console.print(f"PgBouncer stopped (pid {d['pid']}, {d['mode']})" if d["stopped"]
                      else "PgBouncer was not running")

    emit({"ok": True, **report}, as_json, render)


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Whether PgBouncer runs, and its SHOW POOLS / SHOW STATS figures."""
    report = run(scaling.pooler(settings(home), "status"))

    def render(d: dict[str, Any]) -> None:
        if not d.get("configured"):
            console.print("no pooler: `cardmint pooler up` starts one")
            return
        console.print(f"PgBouncer {'running' if d['running'] else '[red]not running[/]'} on "
                      f"127.0.0.1:{d['port']} in front of {d['target']}"
                      + (f" [yellow](the primary is now {d['primary']}: run `cardmint pooler "
                         "up`)[/]" if d["stale_target"] else ""))
        if "pools" in d:
            console.print(f"  clients {d['client_connections']}, server connections "
                          f"{d['server_connections']}")
            for s in d["stats"]:
                console.print(f"  {s['database']}: {s.get('avg_xact_count')} xact/s, avg "
                              f"query {s.get('avg_query_time')} us, avg wait "
                              f"{s.get('avg_wait_time')} us")

    emit(report, as_json, render)
    if report.get("configured") and (not report["running"] or report["stale_target"]):
        raise typer.Exit(WARN)
