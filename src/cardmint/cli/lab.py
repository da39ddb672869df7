"""`cardmint lab ...`: the three-host Patroni lab in network namespaces (ops/lab), to
rehearse the runbook's failures before production. Thin over `cardmint.ops.lab`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit
from cardmint.errors import UsageError

app = typer.Typer(help="A three-host Patroni lab in network namespaces (cmlab-*, "
                  "10.231.0.0/16): up, status, cut/heal a host's link, down.",
                  no_args_is_help=True)

HostArg = Annotated[str, typer.Argument(help="The lab host: h1, h2, h3.")]


def _home(home: Path | None) -> Path:
    return settings(home).home.resolve() / "lab"


def _lab(home: Path | None) -> Any:
    from cardmint.ops.lab import state

    found = state.load(_home(home))
    if found is None:
        raise UsageError(f"no lab in {_home(home)}: `cardmint lab up` first")
    return found


def _render_status(d: dict[str, Any]) -> None:
    console.print(f"lab in {d['home']} ({'sync' if d['sync'] else 'async'}); DSNs in "
                  f"{d['env_file']} (mode 0600: `set -a; . FILE; set +a`)")
    for h in d["hosts"]:
        link = "[red]CUT[/]" if h["cut"] else "up"
        console.print(f"  {h['name']} {h['address']}: link {link}, "
                      f"{h['role'] or '—'}/{h['state'] or 'no answer'} "
                      f"(timeline {h['timeline'] or '—'})")


@app.command()
def up(hosts: Annotated[int, typer.Option("--hosts", min=1, max=9,
                                          help="How many hosts.")] = 3,
       asynchronous: Annotated[bool, typer.Option(
           "--async", help="Asynchronous replication (default: Patroni's synchronous_mode)."
       )] = False,
       home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Make the namespaces and bridge, start etcd, Patroni and PostgreSQL on each host."""
    from cardmint.ops.lab import lab as labs
    from cardmint.ops.lab import observe

    async def go() -> dict[str, Any]:
        made = await labs.up(settings(home), _home(home), count=hosts, sync=not asynchronous)
        return await observe.status(made)

    emit(run(go()), as_json, _render_status)


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Each host's link and what its Patroni says."""
    from cardmint.ops.lab import observe

    emit(run(observe.status(_lab(home))), as_json, _render_status)


@app.command()
def cut(host: HostArg, home: HomeOpt = None) -> None:
    """Partition a host: its link to the bridge goes down."""
    from cardmint.ops.lab import net

    net.cut(_lab(home).host(host).host)
    console.print(f"{host} cut off")


@app.command()
def heal(host: HostArg, home: HomeOpt = None) -> None:
    """Bring a cut host's link back."""
    from cardmint.ops.lab import net

    net.heal(_lab(home).host(host).host)
    console.print(f"{host} linked again")


@app.command()
def down(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Stop everything by PID, remove every cmlab-* namespace and link by name (also what
    a killed run left), delete the lab's files."""
    from cardmint.ops.lab import lab as labs

    async def go() -> dict[str, Any]:
        return {"stopped": await labs.down(_home(home))}

    emit(run(go()), as_json, lambda d: console.print(
        f"lab down: {', '.join(d['stopped']) or 'nothing was running'}"))
