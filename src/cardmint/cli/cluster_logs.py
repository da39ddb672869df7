"""`cardmint cluster logs`: the nodes' server logs, filtered by level and time."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit, to_json
from cardmint.cluster.engine import LogQuery
from cardmint.cluster.provider import open_cluster


def line(e: dict[str, Any]) -> str:
    code = f" {e['state_code']}" if e.get("state_code") not in (None, "00000") else ""
    text = f"{e.get('timestamp', '')} {e['node']} {e.get('error_severity', '')}{code}: " \
           f"{e.get('message', '')}"
    for key in ("detail", "hint", "statement"):
        if e.get(key):
            text += f"\n    {key}: {e[key]}"
    return text


def register(app: typer.Typer) -> None:
    @app.command(name="logs")
    def show_logs(
        node: Annotated[str | None, typer.Argument(help="One node (default: every node).")]
        = None,
        errors: Annotated[bool, typer.Option("--errors",
                                             help="ERROR, FATAL and PANIC only.")] = False,
        since: Annotated[str | None, typer.Option(
            help="Only entries after this: 90s, 5m, 1h, 2d or an ISO 8601 time.")] = None,
        lines: Annotated[int, typer.Option(help="The last N entries (0: all).")] = 200,
        follow: Annotated[bool, typer.Option(
            "--follow", "-f", help="Keep printing new entries (JSON: one per line).")] = False,
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Each node's server log (jsonlog), merged in time order (on Fly: `flyctl logs`,
        the runbook's `flyctl logs -a APP | grep ERROR`)."""
        cluster = open_cluster(settings(home))
        query = LogQuery(node=node, errors=errors, since=since, lines=lines)
        if not follow:
            report = run(cluster.logs(query))
            emit(report.to_dict(), as_json, _render)
            return
        stream = cluster.follow_logs(LogQuery(node=node, errors=errors, since=since, lines=0))
        for e in run(cluster.logs(query)).entries:
            _print(e, as_json)

        async def tail() -> None:
            async for e in stream:
                _print(e, as_json)

        try:
            run(tail())
        except KeyboardInterrupt:
            pass


def _render(d: dict[str, Any]) -> None:
    for text in d.get("lines") or [line(e) for e in d.get("entries", [])]:
        console.print(text, markup=False, highlight=False)


def _print(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(to_json(e).replace("\n", "") + "\n")
        sys.stdout.flush()
    else:
        console.print(line(e), markup=False, highlight=False)
