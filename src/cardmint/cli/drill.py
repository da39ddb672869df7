"""`cardmint drill ...`: the runbook's drills, automated and measured."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.maintenance import ForceOpt
from cardmint.cli.output import CRITICAL, console, emit

app = typer.Typer(help="The runbook's drills, measured and recorded.", no_args_is_help=True)


def render(d: dict[str, Any]) -> None:
    def s(value: Any) -> str:
        return "—" if value is None else f"{value:.3f} s"

    verdict = "[green]PASS[/]" if d["ok"] else "[bold red]FAIL[/]"
    console.print(f"failover drill {verdict}: {d['old_primary']} killed, {d['new_primary']} "
                  f"promoted ({d['provider']}, {'sync' if d.get('sync') else 'async'})")
    console.print(f"  detection {s(d['detection_s'])}, promotion {s(d['promotion_s'])}, "
                  f"write outage {s(d['write_outage_s'])}")
    console.print(f"  acknowledged writes {d['acknowledged_writes']}, lost {d['lost_writes']}; "
                  f"health after the failover {d['health']}"
                  + (f" ({d['health_severity']}: the old primary is down until it rejoins)"
                     if d.get("health_severity") == "P1" else "")
                  + f"; rejoined {d['rejoined']}")
    for why in d.get("why") or []:  # the reasons, each with what to do
        console.print(f"  [red]why:[/] {escape(why)}")
    if d.get("markdown"):
        console.print(f"  report: {d['markdown']}")


@app.command()
def failover(home: HomeOpt = None, force: ForceOpt = False, as_json: JsonOpt = False) -> None:
    """SIGKILL the primary under a write probe, promote, check, rejoin; report recovery
    times and lost writes (stored in `drills` and under $CARDMINT_HOME/drills/)."""
    from cardmint.ops.drills import failover_drill

    report = run(failover_drill(settings(home), force=force))
    emit(report, as_json, render)
    if not report["ok"]:
        raise typer.Exit(CRITICAL)


@app.command("restore")
def restore_(
    home: HomeOpt = None,
    repo: Annotated[int | None, typer.Option(
        help="The repository off this host to restore from (default: the first).")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Lose the database host (servers SIGKILLed, data directories, repo1 and spool
    deleted) under a writer, restore from the remote repository alone to its last
    archived WAL, make that the primary; report the recovery time and the data lost
    (stored in `drills` and under $CARDMINT_HOME/drills/). Destroys the cluster's
    current nodes: run it on a drill copy, or in a maintenance window."""
    from cardmint.ops.drills import restore_drill

    report = run(restore_drill(settings(home), repo=repo, force=force))

    def show(d: dict[str, Any]) -> None:
        def s(value: Any) -> str:
            return "—" if value is None else f"{value:.3f} s"

        verdict = "[green]PASS[/]" if d["ok"] else "[bold red]FAIL[/]"
        console.print(f"restore drill {verdict}: host lost, restored from repo{d['repo']} "
                      f"as {d['restored_node']}")
        console.print(f"  recovery {s(d['recovery_s'])}; RPO {s(d['rpo_s'])} "
                      f"({d['lost_writes']} of {d['acknowledged_writes']} acknowledged writes "
                      f"lost, {d['lost_archived_writes']} of them archived)")
        if d.get("error"):
            console.print(f"  [red]error:[/] {d['error']}")
        console.print(f"  report: {d['markdown']}")

    emit(report, as_json, show)
    if not report["ok"]:
        raise typer.Exit(CRITICAL)
