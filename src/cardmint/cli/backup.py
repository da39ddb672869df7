"""`cardmint backup ...`: pgBackRest backups, their catalog, retention, WAL archiving status
and point-in-time restore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import CRITICAL, OK, WARN, console, emit
from cardmint.ops import backups
from cardmint.ops.backups import backup, pitr

app = typer.Typer(help="pgBackRest backups (full, diff, incr), WAL archiving, retention and "
                       "point-in-time restore.",
                  no_args_is_help=True)
LEVELS = {"ok": OK, "warn": WARN, "critical": CRITICAL}


def sz(n: int | None) -> str:
    """A byte count as people read it: 512 B, 3.4 kB, 20.1 MB, 1.2 GB."""
    if n is None:
        return "?"
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@app.command()
def create(
    home: HomeOpt = None,
    max_rate: Annotated[str | None, typer.Option(
        help="Go easy on the server (e.g. 50M): pgBackRest 2.45 has no byte-rate limit, so "
             "this runs one process with slow, dense compression.")] = None,
    diff: Annotated[bool, typer.Option(
        "--diff", help="Differential: what changed since the last full backup.")] = False,
    incr: Annotated[bool, typer.Option(
        "--incr", help="Incremental: what changed since the last backup of any type.")] = False,
    repo: Annotated[int | None, typer.Option(
        help="Only this repository (default: every one the cluster has).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a backup of the primary now with pgBackRest (full unless --diff or --incr;
    on Fly: a snapshot of its volume)."""
    data = run(backups.create(settings(home), max_rate=max_rate, diff=diff, incr=incr,
                              repo=repo))

    def render(d: dict[str, Any]) -> None:
        if "snapshot" in d:  # Fly
            snap = d["snapshot"] or {}
            console.print(f"snapshot {snap.get('id') or '(pending)'} of volume {d['volume']} "
                          f"(primary {d['machine']}): {snap.get('status') or 'scheduled'}")
            if d.get("detail"):
                console.print(f"[yellow]note:[/] {d['detail']}")
            return
        console.print(f"backup {d['id']} ({d['type']}, {d['label']}): {sz(d['size_bytes'])} "
                      f"written ({sz(d['data_bytes'])} "
                      f"of data) in {d['duration_s']:.2f} s, {d['throughput_mb_s']} MB/s; "
                      f"WAL {d['start_lsn']} .. {d['end_lsn']} on timeline {d['timeline']}")
        for w in d["warnings"]:
            console.print(f"[yellow]warning:[/] {w}")

    emit(data, as_json, render)


@app.command("list")
def list_(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Backups, newest first (the catalog, reconciled with the disk; on Fly, snapshots)."""
    data = run(backups.list_backups(settings(home)))

    def render(d: dict[str, Any]) -> None:
        if "snapshots" in d:  # Fly
            _render_snapshots(d)
            return
        table = Table(title=f"backups ({d['source']})")
        for col in ("id", "status", "size", "duration", "MB/s", "start LSN", "end LSN", "TL",
                    "verified", "restorable"):
            table.add_column(col, no_wrap=True)
        for b in d["backups"]:
            status = b["status"] if b["status"] != "failed" else "[red]failed[/]"
            table.add_row(b["id"], status, sz(b["size_bytes"]),
                          f"{b['duration_s']:.2f} s" if b["duration_s"] is not None else "",
                          str(b["throughput_mb_s"] or ""), b["start_lsn"] or "",
                          b["end_lsn"] or "", str(b["timeline"] or ""),
                          "yes" if b["verified"] else "no", "yes" if b["restorable"] else "no")
        console.print(table)
        for note in d["notes"]:
            console.print(f"[yellow]{note}[/]")

    emit(data, as_json, render)


@app.command()
def verify(
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="The backup to verify.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """pgbackrest verify: the backup's files against their checksums, and the WAL
    archive's continuity from the backup on."""
    data = run(backup.verify(settings(home), backup_id))

    def render(d: dict[str, Any]) -> None:
        mark = "[green]ok[/]" if d["ok"] else "[red]FAILED[/]"
        console.print(f"backup {d['id']}: {mark}")
        console.print(f"  files: {d['files']['detail']}")
        console.print(f"  WAL:   {d['wal']['detail']}")

    emit(data, as_json, render)
    if not data["ok"]:
        raise typer.Exit(CRITICAL)


@app.command()
def prune(
    home: HomeOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply the retention to backups and the WAL archive."""
    data = run(backup.prune(settings(home), dry_run=dry_run))

    def render(d: dict[str, Any]) -> None:
        verb = "would remove" if d["dry_run"] else "removed"
        console.print(f"kept {len(d['kept'])} backup(s); {verb} {len(d['removed'])} "
                      f"({', '.join(d['removed']) or 'none'}) and {d['wal_removed']} WAL "
                      f"file(s), {sz(d['wal_removed_bytes'])}")

    emit(data, as_json, render)


@app.command()
def schedule(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """One turn of the daily schedule: a backup if one is due, then the retention."""
    data = run(backup.schedule_once(settings(home)))
    emit(data, as_json, lambda d: console.print(
        (f"backup {d['backup']['id']} taken" if d["backup"] else "no backup due")
        + f"; pruned {len(d['prune']['removed'])} backup(s)"))


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """WAL archiving health and the newest backup."""
    data = run(backup.status(settings(home)))

    def render(d: dict[str, Any]) -> None:
        a, latest = d["archiver"], d["latest_backup"]
        console.print(f"status: {d['status']}")
        age = a["last_archived_age_s"]
        console.print(f"archiving: mode {a['archive_mode']}, {a['archived_count']} archived, "
                      f"{a['failed_count']} failed; last {a['last_archived_wal'] or 'never'}"
                      + (f" {age:.0f} s ago" if age is not None else ""))
        if d["archive"]:
            console.print(f"archive: {d['archive']['segments']} segment(s), "
                          f"{sz(d['archive']['size_bytes'])} in {d['archive']['path']}")
        console.print("latest backup: " + (f"{latest['id']}, {latest['age_s'] / 3600:.1f} h old"
                                           if latest else "none"))
        for p in d["problems"]:
            console.print(f"[yellow]{p}[/]")

    emit(data, as_json, render)
    if LEVELS[data["status"]]:
        raise typer.Exit(LEVELS[data["status"]])


def _render_snapshots(d: dict[str, Any]) -> None:
    table = Table(title=f"snapshots of {d['app']}'s volumes (Fly)")
    for col in ("snapshot", "volume", "size", "status", "created"):
        table.add_column(col, no_wrap=True)
    for snap in d["snapshots"]:
        table.add_row(str(snap.get("id")), snap["volume"], sz(snap.get("size")),
                      str(snap.get("status") or ""), str(snap.get("created_at") or ""))
    console.print(table)


@app.command()
def restore(
    to: Annotated[Path | None, typer.Option(
        "--to", help="An empty directory for the new cluster.")] = None,
    to_app: Annotated[str | None, typer.Option(
        "--to-app", help="Fly: the new Postgres app to create from the snapshot ID.")] = None,
    backup_id: Annotated[str | None, typer.Argument(
        metavar="[ID]", help="The backup to start from (default: the newest that fits).")] = None,
    target_time: Annotated[str | None, typer.Option(
        help="Recover to this moment (ISO 8601 with a zone, e.g. 2026-11-29T10:20:30Z).")] = None,
    target_lsn: Annotated[str | None, typer.Option(help="Recover to this WAL position.")] = None,
    latest: Annotated[bool, typer.Option(
        "--latest", help="Recover everything the archive holds.")] = False,
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
    repo: Annotated[int | None, typer.Option(
        help="Restore from this repository alone (default: the first that has it).")] = None,
    repoint: Annotated[bool, typer.Option(
        "--repoint", help="Once verified, make it the cluster's primary.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point-in-time restore into a new cluster, verified with health and test-card.
    Without a target, the backup is restored as it was. On Fly: ID is a volume snapshot
    and --to-app the new Postgres app made from it."""
    data = run(backups.restore(settings(home), backup_id=backup_id, to=to, to_app=to_app,
                               target_time=target_time, target_lsn=target_lsn,
                               latest=latest, port=port, repoint=repoint, repo=repo))

    def render(d: dict[str, Any]) -> None:
        if "app" in d:  # Fly
            mark = "[green]verified[/]" if d["ok"] else "[red]NOT verified[/]"
            console.print(f"created {d['app']} from snapshot {d['snapshot']} in "
                          f"{d['create_s']:.0f} s: {mark}; its {d['superuser']} password is "
                          f"saved as {d['password_saved_as']} (not shown)")
            for c in d["verification"]["checks"]:
                if not c["ok"]:
                    console.print(f"  [red]{c['name']}[/]: {c['detail']}")
            return
        mark = "[green]verified[/]" if d["verification"]["ok"] else "[red]NOT verified[/]"
        target = " ".join(str(v) for v in d["target"].values() if v)
        console.print(f"restored backup {d['backup_id']} to {target} "
                      f"into {d['restored_dir']} as {d['node']} "
                      f"(port {d['port']}, pid {d['pid']}) in {d['duration_s']:.2f} s: {mark}")
        for c in d["verification"]["checks"]:
            if not c["ok"]:
                console.print(f"  [red]{c['name']}[/]: {c['detail']}")
        if d["repointed"]:
            console.print(f"repointed: the cluster's primary is now {d['node']}")
        else:
            if d.get("repoint"):
                console.print(f"[red]not repointed[/]: {d['repoint'].get('detail')}")
            console.print(f"it keeps running: point commands at it with --home {d['home']}; "
                          f"remove it with `cardmint backup discard {d['node']}`")
        for w in d["warnings"] + (d.get("repoint") or {}).get("warnings", []):
            console.print(f"[yellow]warning:[/] {w}")

    emit(data, as_json, render)
    if not data.get("ok", True):
        raise typer.Exit(CRITICAL)


@app.command()
def discard(
    name: Annotated[str, typer.Argument(help="The restored copy (restore<N>).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a restored copy (by PID) and delete it."""
    data = run(pitr.discard(settings(home), name))
    emit(data, as_json, lambda d: console.print(
        f"stopped {d['node']} (pid {d['stopped_pid']}) and deleted {', '.join(d['deleted'])}"))
