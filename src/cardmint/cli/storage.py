"""`cardmint storage`: disk usage against the runbook's thresholds, and VACUUM."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cardmint.cli.backup import sz
from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import CRITICAL, OK, WARN, console, emit
from cardmint.ops import storage
from cardmint.ops.storage import usage

app = typer.Typer(help="Disk usage, largest relations, bloat; VACUUM.",
                  invoke_without_command=True)
LEVELS = {"ok": OK, "warn": WARN, "critical": CRITICAL}


@app.callback()
def report(ctx: typer.Context, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Data directory usage against its filesystem, largest tables and indexes, dead
    tuples and bloat, WAL and archive size."""
    if ctx.invoked_subcommand is not None:
        return
    data = run(storage.report(settings(home)))

    def render(d: dict[str, Any]) -> None:
        if "volumes" in d:  # Fly
            _render_volumes(d)
            return
        u = d["usage"]
        used = "unknown" if u["used_pct"] is None else f"{u['used_pct']:.1f} %"
        console.print(f"storage {d['status']}: {used} of {sz(u['capacity_bytes'])} used "
                      f"(warn {d['thresholds']['warn_pct']:g} %, critical "
                      f"{d['thresholds']['critical_pct']:g} %); database "
                      f"{sz(u['database_bytes'])}, WAL {sz(d['wal_bytes'])}, archive "
                      f"{sz(d['archive']['bytes'])} ({d['archive']['files']} files), backups "
                      f"{sz(d['backups_bytes'])}")
        table = Table(title="largest tables")
        for col in ("table", "total", "heap", "indexes", "live", "dead", "dead %", "bloat"):
            table.add_column(col, no_wrap=True)
        for t in d["largest_tables"]:
            table.add_row(f"{t['schema']}.{t['name']}", sz(t["total_bytes"]),
                          sz(t["heap_bytes"]), sz(t["index_bytes"]), str(t["live_tuples"]),
                          str(t["dead_tuples"]), f"{t['dead_pct']:.1f}",
                          sz(t["bloat_bytes_estimate"]))
        console.print(table)
        indexes = Table(title="largest indexes")
        for col in ("index", "table", "size", "scans"):
            indexes.add_column(col, no_wrap=True)
        for i in d["largest_indexes"]:
            indexes.add_row(f"{i['schema']}.{i['name']}", i["table"], sz(i["bytes"]),
                            str(i["scans"]))
        console.print(indexes)

    emit(data, as_json, render)
    if LEVELS[data.get("status", "ok")]:
        raise typer.Exit(LEVELS[data["status"]])


@app.command()
def vacuum(
    full: Annotated[bool, typer.Option(
        "--full", help="VACUUM FULL: rewrites tables under an exclusive lock.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Run FULL outside a maintenance window.")] = False,
    table: Annotated[list[str] | None, typer.Option(
        "--table", help="Only this table (repeatable).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """VACUUM (ANALYZE) the database; --full only inside a maintenance window."""
    data = run(usage.vacuum(settings(home), full=full, force=force, tables=table))
    emit(data, as_json, lambda d: console.print(
        f"{d['statement']} in {d['duration_s']:.2f} s; database {sz(d['database_bytes_before'])}"
        f" -> {sz(d['database_bytes_after'])}"))


def _render_volumes(d: dict[str, Any]) -> None:
    table = Table(title=f"volumes of {d['app']} (Fly; usage: `cardmint health`)")
    for col in ("volume", "size", "machine", "role", "region"):
        table.add_column(col, no_wrap=True)
    for v in d["volumes"]:
        table.add_row(str(v["id"]), f"{v['size_gb']} GB", str(v["machine"] or ""),
                      str(v["role"] or ""), str(v["region"] or ""))
    console.print(table)


@app.command()
def extend(
    volume: Annotated[str, typer.Argument(help="The Fly volume's id (`cardmint storage`).")],
    size_gb: Annotated[int, typer.Option("--size-gb", help="The new size in GB.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fly: grow a volume (the runbook's answer to storage over 90 %)."""
    data = run(storage.extend(settings(home), volume, size_gb))
    emit(data, as_json, lambda d: console.print(
        f"volume {d['volume']}: {d['size_gb_before']} GB -> {d['size_gb']} GB"
        + (f"\n[yellow]restart needed:[/] {d['detail']}" if d.get("needs_restart") else "")))
