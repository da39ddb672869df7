"""`cardmint cluster logs`: the nodes' server logs, filtered by level and time."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit, to_json
from cardmint.cluster.fly.engine import FlyCluster
from cardmint.cluster.pg import logs
from cardmint.cluster.provider import engine_of
from cardmint.cluster.state import load
from cardmint.errors import ClusterError, UsageError


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
        """Each node's server log (jsonlog), merged in time order."""
        s = settings(home)
        if engine_of(s) == "fly":  # the runbook's `flyctl logs -a APP | grep ERROR`
            if node or since or follow:
                raise UsageError("on Fly, cluster logs takes --errors and --lines only "
                                 "(`flyctl logs -a APP` follows)")
            text = run(FlyCluster.from_settings(s).logs(errors_only=errors))
            text = text[-lines:] if lines > 0 else text
            emit({"lines": text, "count": len(text)}, as_json,
                 lambda d: [console.print(t, markup=False, highlight=False) for t in d["lines"]])
            return
        state = load(s.home)
        if state is None:
            raise ClusterError(f"no cluster in {s.home}: run `cardmint cluster up`")
        keep = logs.Filter(since=logs.parse_since(since) if since else None, errors=errors)
        names = [node] if node else None
        found = logs.entries(state, names, keep=keep)
        if lines > 0:
            found = found[-lines:]
        if not follow:
            emit({"entries": found, "count": len(found)}, as_json,
                 lambda d: [console.print(line(e), markup=False, highlight=False)
                            for e in d["entries"]])
            return
        for e in found:
            _print(e, as_json)

        async def tail() -> None:
            async for e in logs.follow(state, names, keep=keep):
                _print(e, as_json)

        try:
            run(tail())
        except KeyboardInterrupt:
            pass


def _print(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(to_json(e).replace("\n", "") + "\n")
        sys.stdout.flush()
    else:
        console.print(line(e), markup=False, highlight=False)
