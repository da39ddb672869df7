"""`cardmint monitor` and `cardmint alerts`: the runbook's sustained thresholds as alerts.

Exit codes of `monitor --once` and `alerts`: the worst firing alert decides: none 0,
P2 1, P1 or P0 2; 3 when there is nothing to monitor or the database cannot be asked.
The loop (without --once) runs until Ctrl-C; with --json it prints one compact JSON
document per round, one per line.

`monitor export-rules` and `monitor export-dashboard` write the same alerts as a
Prometheus rules file (and its promtool tests) and a Grafana dashboard, for shops that
already run them.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit, measured
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.errors import UsageError
from cardmint.ops.monitor import grafana, prometheus, sample
from cardmint.ops.monitor.loop import run_loop
from cardmint.ops.monitor.rules import RULE_NAMES, worst_severity
from cardmint.ops.monitor.runbook import RUNBOOK

app = typer.Typer(help="Sample the cluster and raise or clear alerts on the runbook's "
                       "thresholds; export them for Prometheus and Grafana.",
                  invoke_without_command=True)

_COLOURS = {"P0": "bold red", "P1": "red", "P2": "yellow"}


def _since(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else \
        str(value or "")[:19].replace("T", " ")


def _alert_table(alerts: list[dict[str, Any]], title: str) -> Table:
    """Readable at 80 columns: five columns that wrap at spaces (never inside a word),
    the fix and the runbook section together in the last."""
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("sev", no_wrap=True)
    longest = max(map(len, RULE_NAMES))  # a rule name is never cut
    table.add_column("alert", min_width=longest, max_width=longest)
    table.add_column("value", no_wrap=True)
    table.add_column("since (UTC)", min_width=10, max_width=10)  # date over time
    table.add_column("what to do", min_width=20, ratio=1)
    for a in alerts:
        colour = _COLOURS.get(a["severity"], "")
        value = "" if a["value"] is None else f"{a['value']:g}"
        if a["threshold"] is not None:
            value += f" / {a['threshold']:g}"
        name = a["name"] + (f" on {a['node']}" if a["node"] else "")
        if a["status"] != "firing":
            name += f" ({a['status']})"
        do = escape(a["recommendation"] or "")
        if a["runbook_section"]:
            do += f"\n[dim]runbook: {escape(a['runbook_section'])}[/]"
        table.add_row(f"[{colour}]{a['severity']}[/]", name, value, _since(a["started_at"]),
                      do)
    return table


def _render_round(d: dict[str, Any]) -> None:
    s = d["sample"]
    stored = "" if d["stored"] else " [red](not stored: database unreachable)[/]"
    host = s.get("host") or {}
    console.print(f"{_since(d['taken_at'])} primary {s.get('primary') or '[red]none[/]'}, "
                  f"p95 {measured(s.get('latency_p95_ms'), 'ms')}, pool "
                  f"{measured(s.get('pool_utilization_pct'), '%')}, CPU "
                  f"{measured(host.get('cpu_pct'), '%')}, memory "
                  f"{measured(host.get('memory_pct'), '%')}; "
                  f"{len(d['firing'])} firing{stored}")
    for error in d["errors"]:
        console.print(f"  [yellow]{escape(error)}[/]")


def _log_alerts() -> None:
    """Alert changes go to stderr as log lines (stdout stays the report), once."""
    logger = logging.getLogger("cardmint.alerts")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _render_once(d: dict[str, Any]) -> None:
    _render_round(d)
    if d["firing"]:
        console.print(_alert_table(d["firing"], "firing alerts"))


async def _loop(s: Settings, interval: float, webhook: str | None, as_json: bool,
                backups: bool = True) -> None:
    """Until Ctrl-C: one bounded round per interval (see ops/monitor/loop.py)."""
    shown_follower = False

    def show(data: dict[str, Any]) -> None:
        nonlocal shown_follower
        if data.get("leader") is False:
            if as_json:
                print(json.dumps(data), flush=True)
            elif not shown_follower:
                console.print("another monitor (a `cardmint serve` or `cardmint monitor`) "
                              "is sampling; this one takes over if it stops")
            shown_follower = True
            return
        shown_follower = False
        if as_json:
            print(json.dumps(data), flush=True)
        else:
            _render_round(data)

    await run_loop(s, interval_s=interval, webhook=webhook, backups=backups, on_round=show)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        print(text, end="")
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    console.print(f"wrote {out}")


@app.callback()
def monitor(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="One round: print the report, exit 0 none, 1 P2, 2 P1/P0.")] = False,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between rounds (default CARDMINT_MONITOR_INTERVAL_S, 60).",
        show_default=False)] = None,
    webhook: Annotated[str | None, typer.Option(
        help="POST each alert change as JSON here (default "
             "CARDMINT_ALERT_WEBHOOK_URL).", show_default=False)] = None,
    backups: Annotated[bool, typer.Option(
        "--backups/--no-backups",
        help="Also run the daily backup schedule in the loop.")] = True,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample the cluster and raise or clear alerts on the runbook's thresholds."""
    if ctx.invoked_subcommand is not None:
        return
    if interval is not None and interval <= 0:
        raise UsageError("--interval must be positive")
    s = settings(home)
    _log_alerts()
    if once:
        report = run(sample.run_once(s, webhook=webhook, interval_s=interval))
        emit(report.to_dict(), as_json, _render_once)
        raise typer.Exit(report.exit_code)
    run(_loop(s, interval or s.monitor_interval_s, webhook, as_json, backups))


@app.command("export-rules")
def export_rules(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the rules here (default: stdout).", show_default=False)] = None,
    tests: Annotated[Path | None, typer.Option(
        "--tests", help="Also write `promtool test rules` cases for them here (needs --out).",
        show_default=False)] = None,
    runbook_url: Annotated[str, typer.Option(
        help="Where the runbook is, for each alert's runbook_url (e.g. its URL in your "
             "repository browser).")] = RUNBOOK,
    home: HomeOpt = None,
) -> None:
    """The alerts `cardmint monitor` raises, as Prometheus alerting rules.

    Same thresholds and sustain times (from the settings), severity labels, runbook links.
    """
    if tests is not None and out is None:
        raise UsageError("--tests needs --out: the tests name the rules file they load")
    s = settings(home)
    _write(prometheus.to_yaml(prometheus.rules_document(s, runbook=runbook_url)), out)
    if tests is not None and out is not None:
        rules_file = os.path.relpath(out.resolve(), tests.resolve().parent)
        document = prometheus.tests_document(s, rules_file, runbook=runbook_url)
        _write(prometheus.to_yaml(document, prometheus.TESTS_HEADER), tests)


@app.command("export-dashboard")
def export_dashboard(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the dashboard JSON here (default: stdout).",
        show_default=False)] = None,
    home: HomeOpt = None,
) -> None:
    """A Grafana dashboard with the ops dashboard page's panels, on /metrics."""
    _write(json.dumps(grafana.dashboard(settings(home)), indent=2) + "\n", out)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="monitor")

    @root.command()
    def alerts(
        all_: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Firing alerts (with --all, resolved ones too), newest first."""

        async def fetch() -> list[dict[str, Any]]:
            db = Database(settings(home), replica_dsns=[])
            await db.open(monitor=False)
            try:
                return await sample.list_alerts(db, include_resolved=all_)
            finally:
                await db.close()

        found = run(fetch())
        worst = worst_severity(a["severity"] for a in found if a["status"] == "firing")

        def render(d: dict[str, Any]) -> None:
            if not d["alerts"]:
                console.print("no alerts" if all_ else "no firing alerts")
            else:
                console.print(_alert_table(d["alerts"], "alerts" if all_ else "firing alerts"))

        emit({"severity": worst, "alerts": found}, as_json, render)
        raise typer.Exit(sample.EXIT_CODES[worst])
