"""How `cardmint cluster resize` reports to people."""

from __future__ import annotations

from typing import Any

from cardmint.cli.output import console


def render(d: dict[str, Any]) -> None:
    cpu = f", {d['cpu']} CPU" if d["cpu"] is not None else ""
    outage = d["write_outage_s"]
    console.print(f"resized to {d['memory']}{cpu} in {d['duration_s']:.2f} s; primary "
                  f"{d['primary_before']} -> {d['primary_after']}; write outage "
                  + ("unmeasured" if outage is None else f"{outage * 1000:.0f} ms")
                  + f" ({d['probe_writes']} probe writes, {d['probe_failures']} failed)")
    for n in d["nodes"]:
        changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in n["changed"].items())
        console.print(f"  {n['node']} ({n['role_before']} -> {n['role_after']}, "
                      f"{n['restarted_by']}): {changed or 'nothing changed'}")
