"""`cardmint cluster ...`: the primary + replica cluster, whichever engine runs it."""

from __future__ import annotations

import os
import subprocess
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import CRITICAL, OK, WARN, console, emit
from cardmint.cluster.engine import Cluster
from cardmint.cluster.provider import open_cluster

app = typer.Typer(help="Create, inspect, connect to and stop the PostgreSQL cluster.",
                  no_args_is_help=True)


def _cluster(home: Any, engine: str | None = None) -> Cluster:
    return open_cluster(settings(home), engine)


@app.command()
def up(
    home: HomeOpt = None,
    replicas: Annotated[int | None, typer.Option(help="Streaming replicas (default 1).")] = None,
    sync: Annotated[bool | None, typer.Option("--sync/--async",
                                              help="Synchronous replication.")] = None,
    engine: Annotated[str | None, typer.Option(
        help="local (default): failover by command; patroni: Patroni fails over by itself."
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create and start a primary and N streaming replicas, or adopt the running cluster."""
    cfg = settings(home)
    cluster = open_cluster(cfg, engine)
    report = run(cluster.up(replicas=replicas, sync=sync))
    data = {"ok": True, "provider": cluster.provider, "home": str(cfg.home.resolve()),
            **report.to_dict()}

    def render(d: dict[str, Any]) -> None:
        verb = "created" if d["created"] else "adopted"
        started = ", ".join(d["started"]) or "nothing (all running)"
        console.print(f"{d['provider']} cluster {verb} in {d['home']} in "
                      f"{d['duration_s']:.2f} s; started: {started}")

    emit(data, as_json, render)


@app.command()
def down(
    home: HomeOpt = None,
    purge: Annotated[bool, typer.Option(
        help="Also delete the cluster's data: its nodes, WAL archive, logs, certificates, "
             "state and secrets. backups/ (and drill or incident reports) are kept, and "
             "listed: delete them yourself once you no longer need them.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop every server of the cluster, by PID (with --purge, delete it; backups/ stay)."""
    report = run(_cluster(home).down(purge=purge))

    def render(d: dict[str, Any]) -> None:
        if not d["stopped"]:
            console.print("nothing was running")
        for s in d["stopped"]:
            console.print(f"stopped {s['node']} (pid {s['pid']}, {s['mode']} shutdown)")
        if d["purged"]:
            console.print("cluster data deleted")
        if d["kept"]:
            console.print(f"kept in the cluster's home: {', '.join(d['kept'])} (backups "
                          "hold the whole database: delete them yourself once not needed)")

    emit({"ok": True, **report.to_dict()}, as_json, render)


def status_code(report: dict[str, Any], lag_warn_s: float, lag_critical_s: float) -> int:
    """critical without a running primary or with two; warn for a replica down, not
    streaming or late, or for what the engine warns of."""
    nodes = report["nodes"]
    heads = [n for n in nodes if n["role"] == "primary" and n["running"] and not n["error"]]
    if len(heads) != 1:
        return CRITICAL
    code = WARN if report.get("warnings") else OK
    for n in nodes:
        if n["role"] != "replica":
            continue
        # Fly reports machine states ("started"), not replication states
        if not n["running"] or n["error"] or n["state"] not in ("streaming", "started"):
            code = WARN
        elif n["lag_s"] is not None and n["lag_s"] > lag_critical_s:
            return CRITICAL
        elif n["lag_s"] is not None and n["lag_s"] > lag_warn_s:
            code = WARN
    return code


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Each node as it reports itself: role, port, timeline, LSN, lag."""
    cfg = settings(home)
    report = run(open_cluster(cfg).status()).to_dict()

    def render(d: dict[str, Any]) -> None:
        mode = {True: "sync", False: "async", None: "replication mode not reported"}[d["sync"]]
        table = Table(title=f"cluster {d['home']} ({d['provider']}, {mode})")
        for col in ("node", "role", "port", "state", "TL", "LSN", "lag"):
            table.add_column(col, no_wrap=True)
        for n in d["nodes"]:
            state = n["state"] or ""
            if not n["running"] or n["error"]:
                state = f"[red]{state}[/]"
            lag = "" if n["lag_s"] is None else f"{n['lag_bytes'] or 0} B, {n['lag_s']:.3f} s"
            table.add_row(str(n["name"]), n["role"], str(n["port"]), state,
                          str(n["timeline"] or ""), n["lsn"] or "", lag)
        console.print(table)
        for warning in d.get("warnings") or []:
            console.print(f"[yellow]warning:[/] {warning}")

    emit(report, as_json, render)
    code = status_code(report, cfg.replica_lag_warn_s, cfg.replica_lag_critical_s)
    if code:
        raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def connect(
    ctx: typer.Context,
    node: Annotated[str | None, typer.Argument(
        help="Node name, or primary / replica for whichever has that role now.")] = None,
    home: HomeOpt = None,
) -> None:
    """psql on a node's application database; further arguments go to psql."""
    argv, env = run(_cluster(home).psql_command(node, list(ctx.args)))
    code = subprocess.call(argv, env={**os.environ, **env})
    if code:
        raise typer.Exit(code)


# -- failover, switchover, rejoin, sync guard ------------------------------------------

ToOpt = Annotated[str | None, typer.Option(
    "--to", help="The replica to promote (default: the one holding the most WAL).")]


def _render_failover(d: dict[str, Any]) -> None:
    timeline = f"timeline {d['timeline']}, " if d["timeline"] is not None else ""
    if d.get("rejoin"):
        after = "rejoined as a replica"
    elif d["fenced"]:
        after = f"is fenced: run `cardmint cluster rejoin {d['old_primary']}`"
    else:  # Patroni and Fly keep the old primary themselves
        after = "is left to the engine to rejoin as a replica"
    console.print(f"{d['kind']}: {d['new_primary']} is the primary ({timeline}"
                  f"{d['duration_s']:.3f} s); {d['old_primary']} {after}")
    steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in d["timings_s"].items())
    console.print(f"  steps: {steps}")
    if d["not_streaming"]:
        console.print(f"  [yellow]not streaming yet:[/] {', '.join(d['not_streaming'])}")


@app.command()
def failover(home: HomeOpt = None, to: ToOpt = None, as_json: JsonOpt = False) -> None:
    """Promote a replica now; the old primary is fenced until `cluster rejoin`."""
    report = run(_cluster(home).failover(to))
    emit({"ok": True, **report.to_dict()}, as_json, _render_failover)


@app.command()
def switchover(home: HomeOpt = None, to: ToOpt = None, as_json: JsonOpt = False) -> None:
    """Planned failover that loses no acknowledged write; the old primary rejoins."""
    report = run(_cluster(home).switchover(to))
    emit({"ok": True, **report.to_dict()}, as_json, _render_failover)


def _print_progress(logger: str) -> None:
    """Print a logger's INFO records on stderr as they come (long steps' progress)."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  … %(message)s"))
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(logging.INFO)


@app.command()
def rejoin(
    node: Annotated[str, typer.Argument(help="The node to bring back as a replica.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A stopped, fenced or broken node back as a replica: started again if that is
    enough, else pg_rewind, else a fresh base backup (with progress)."""
    if not as_json:  # each step as it happens, on stderr
        _print_progress("cardmint.rejoin")
    report = run(_cluster(home).rejoin(node))

    def render(d: dict[str, Any]) -> None:
        how = {"restart": "started again", "rewind": "rewound with pg_rewind",
               "basebackup": "copied afresh from the primary"}.get(d["method"], d["method"])
        console.print(f"{d['node']} streams from {d['primary']} ({how}, "
                      f"{d['duration_s']:.1f} s)")
        if d["fallback_reason"]:
            console.print(f"  not rewound: {escape(d['fallback_reason'])}")
        if d["set_aside"]:
            console.print(f"  its old directory is kept in {d['set_aside']}: after a "
                          "failover it may hold writes no other node has. Check them, "
                          f"then remove it: rm -rf {d['set_aside']}")

    emit({"ok": True, **report.to_dict()}, as_json, render)


@app.command(name="sync-guard")
def sync_guard(
    home: HomeOpt = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    strict: Annotated[bool | None, typer.Option(
        "--strict/--no-strict",
        help="Only alert; never drop to asynchronous (default: CARDMINT_SYNC_STRICT).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Watchdog: commits stuck on a lost sync standby -> async + P1 alert; then restore."""
    from cardmint.ops.monitor.loop import Leadership
    from cardmint.ops.syncguard import LOCK_KEY, Round, SyncGuard

    guard = SyncGuard(settings(home), strict=strict)

    def show(r: Round) -> None:  # as it happens, except the one-round JSON document
        if not (once and as_json) and (once or r.action != "none" or r.alert):
            console.print(f"{r.at:%H:%M:%S} {r.primary}: {r.action} ({r.reason})"
                          + (f"; alert {r.alert}" if r.alert else ""))

    if not once and not as_json:
        console.print(f"sync guard on {guard.cluster.home}: a round every "
                      f"{guard.settings.sync_guard_interval_s:g} s (Ctrl-C stops it)")
    async def guard_loop() -> list[Round]:
        if once:
            return await guard.run(once=True, on_round=show)
        # one guard acts cluster-wide: a `cardmint serve` may already run one
        leader = Leadership(guard.settings, LOCK_KEY, "cardmint-sync-guard-lock")
        try:
            return await guard.run(on_round=show, lead=leader.held)
        finally:
            await leader.release()

    rounds = run(guard_loop())
    if once and as_json:
        emit({"ok": True, **rounds[-1].to_dict()}, True, lambda d: None)
