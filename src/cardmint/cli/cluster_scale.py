"""`cardmint cluster add-replica | remove-replica | resize`: scale a running cluster."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cardmint.cli.cluster_resize import render as _render_resize
from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit
from cardmint.ops import scaling


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


def _render_fly_resize(d: dict[str, Any]) -> None:
    console.print(f"{d['app']}: every machine is {d['vm_size']} ({d['duration_s']:.1f} s); "
                  f"primary {d['primary_before']} -> {d['primary_after']}")
    for m in d["machines"]:
        console.print(f"  {m['machine']} (was {m['was']}): {m['duration_s']:.1f} s")


def register(app: typer.Typer) -> None:
    @app.command(name="add-replica")
    def add_replica(
        home: HomeOpt = None,
        sync: Annotated[bool, typer.Option(
            "--sync", help="Make the cluster synchronous (FIRST 1 of its replicas).")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """A new streaming replica from the current primary, without stopping anything."""
        report = run(scaling.add_replica(settings(home), sync=sync))
        emit({"ok": True, **report.to_dict()}, as_json, _render)

    @app.command(name="resize")
    def resize_cmd(
        memory: Annotated[str | None, typer.Option(
            "--memory", help="The machine's memory per node, e.g. 4GB (local engine).")] = None,
        cpu: Annotated[int | None, typer.Option("--cpu", help="CPU cores per node.")] = None,
        vm_size: Annotated[str | None, typer.Option(
            "--vm-size", help="Fly: the machines' new size, e.g. performance-2x.")] = None,
        force: Annotated[bool, typer.Option(
            "--force", help="Run outside a maintenance window.")] = False,
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Resize every node: replicas first, then a switchover, then the old primary."""
        report = run(scaling.resize(settings(home), memory=memory, cpu=cpu,
                                    vm_size=vm_size, force=force)).to_dict()
        emit({"ok": True, **report}, as_json,
             _render_fly_resize if "vm_size" in report else _render_resize)

    @app.command(name="remove-replica")
    def remove_replica(
        node: Annotated[str, typer.Argument(help="The replica to remove (never the primary).")],
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Drain a replica of reads, stop it by PID, drop its slot and delete its data."""
        report = run(scaling.remove_replica(settings(home), node))
        emit({"ok": True, **report.to_dict()}, as_json, _render)
