"""The runbook's daily checks: `health`, `stats`, `test-card`."""

from __future__ import annotations

from typing import Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit

STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_health(d: dict[str, Any]) -> None:
    """One line per check: it stays readable in a narrow terminal or a log."""
    head = f"health: [{STYLE[d['status']]}]{d['status']}[/]"
    console.print(head + (f" ({d['severity']})" if d["severity"] else "")
                  + f"  {d['checked_at']}")
    for c in d["checks"]:
        value = "" if c["value"] is None else f"{_fmt(c['value'])} {c['unit']}"
        limits = "" if c["warn"] is None and c["critical"] is None else \
            f"warn {_fmt(c['warn']) or '-'} / crit {_fmt(c['critical']) or '-'}"
        console.print(f"  [{STYLE[c['status']]}]{c['status']:<8}[/] {c['name']:<19} "
                      f"{c['node'] or '':<6} {value:>16}  {limits:<22} [dim]{c['detail']}[/]",
                      highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def health(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
        """The runbook's health check: exit 0 ok, 1 warn, 2 critical."""
        from cardmint.ops.health.report import check_health

        report = run(check_health(settings(home)))
        emit(report.to_dict(), as_json, render_health)
        if report.exit_code:
            raise typer.Exit(report.exit_code)

    @app.command()
    def stats(home: HomeOpt = None, as_json: JsonOpt = False,
              window: float = typer.Option(2.0, help="Seconds to measure TPS over.")) -> None:
        """Latency, throughput, read/write ratio, connections, slow queries, sizes."""
        from cardmint.cli.stats_view import render_stats
        from cardmint.ops.health.stats import collect_stats

        report = run(collect_stats(settings(home), window_s=window))
        emit(report, as_json, render_stats)

    @app.command(name="test-card")
    def test_card(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
        """Verify the schema after a deploy: revision at head, a write read back everywhere."""
        from cardmint.cli.stats_view import render_test_card
        from cardmint.ops.health.testcard import run_test_card

        report = run(run_test_card(settings(home)))
        emit(report.to_dict(), as_json, render_test_card)
        if not report.ok:
            raise typer.Exit(2)
