"""`cardmint cluster add-replica | remove-replica`: read replicas on a running cluster."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit
from cardmint.cluster.local import LocalCluster


def _render(d: dict[str, Any]) -> None:
    if d["action"] == "added":
        console.print(f"{d['node']} streams from {d['primary']} on port {d['port']} "
                      f"(slot {d['slot']}, {d['duration_s']:.2f} s); applications route "
                      "reads to it from their next replica check")
    else:
        console.print(f"{d['node']} removed in {d['duration_s']:.2f} s: stopped, slot "
                      f"{d['slot']} {'dropped' if d['slot_dropped'] else '[red]NOT dropped[/]'}"
                      ", data deleted")
        if not d["drained"]:
            console.print("  [yellow]some application reads were still on it[/] (they are "
                          "retried on the primary)")
    if d["sync_names"] is not None:
        console.print(f"  synchronous_standby_names = {d['sync_names']!r}")


def register(app: typer.Typer) -> None:
    @app.command(name="add-replica")
    def add_replica(
        home: HomeOpt = None,
        sync: Annotated[bool, typer.Option(
            "--sync", help="Make the cluster synchronous (FIRST 1 of its replicas).")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """A new streaming replica from the current primary, without stopping anything."""
        report = run(LocalCluster(settings(home)).add_replica(sync=sync))
        emit({"ok": True, **report.to_dict()}, as_json, _render)

    @app.command(name="resize")
    def resize_cmd(
        memory: Annotated[str, typer.Option(
            "--memory", help="The machine's memory per node, e.g. 4GB.")],
        cpu: Annotated[int | None, typer.Option("--cpu", help="CPU cores per node.")] = None,
        force: Annotated[bool, typer.Option(
            "--force", help="Run outside a maintenance window.")] = False,
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Memory/CPU-derived settings on every node: replicas restarted, then a switchover."""
        from cardmint.cli.cluster_resize import render
        from cardmint.cluster.resize import resize
        from cardmint.ops.maintenance import require_window

        require_window("resize", force=force)
        report = run(resize(LocalCluster(settings(home)), memory, cpu))
        emit({"ok": True, **report.to_dict()}, as_json, render)

    @app.command(name="remove-replica")
    def remove_replica(
        node: Annotated[str, typer.Argument(help="The replica to remove (never the primary).")],
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Drain a replica of reads, stop it by PID, drop its slot and delete its data."""
        report = run(LocalCluster(settings(home)).remove_replica(node))
        emit({"ok": True, **report.to_dict()}, as_json, _render)
