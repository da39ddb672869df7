"""`cardmint loadtest pgbench|app`: the runbook's weekly load tests, judged against the SLA."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import CRITICAL, OK, WARN, console, emit

app = typer.Typer(help="Load tests: pgbench on its own database, and the HTTP API's mix.",
                  no_args_is_help=True)
EXIT = {"ok": OK, "warn": WARN, "critical": CRITICAL}
STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}"


def render_pgbench(d: dict[str, Any]) -> None:
    lat = d["latency_ms"]
    console.print(f"pgbench [{STYLE[d['status']]}]{d['status']}[/] on {d['target']}/"
                  f"{d['database']} (scale {d['scale']}"
                  f"{', initialised now' if d['initialised'] else ''}): "
                  f"{d['clients']} clients, {d['jobs']} threads, {d['duration_s']} s, "
                  f"{'select-only' if d['select_only'] else 'TPC-B-like'}, {d['protocol']}")
    console.print(f"  {d['tps'] or 0:,.0f} TPS, {d['transactions'] or 0:,} transactions, "
                  f"{d['failed']} failed")
    console.print(f"  latency ms: avg {_ms(lat['avg'])}, p50 {_ms(lat['p50'])}, "
                  f"p95 {_ms(lat['p95'])} (SLA < {d['sla']['p95_warn_ms']:g}), "
                  f"p99 {_ms(lat['p99'])}, max {_ms(lat['max'])}")
    if d.get("error"):
        console.print(f"  [red]error:[/] {d['error']}")


def render_app(d: dict[str, Any]) -> None:
    total = d["total"]
    gen = d["generator"]
    console.print(f"application load test [{STYLE[d['status']]}]{d['status']}[/] against "
                  f"{d['url']}: {d['concurrency']} clients, {d['duration_s']} s, "
                  f"generator {gen['name']} ({gen['client']})")
    if gen.get("why"):
        console.print(f"  [yellow]{gen['why']}[/]")
    if gen["name"] == "wrk":
        plan = gen["plan"]
        shares = ", ".join(f"{k} {v:,}" for k, v in plan["operations"].items())
        console.print(f"  wrk cycles a plan of {plan['requests']:,} requests ({shares}; seed "
                      f"{plan['seed']}) and measures the mix as a whole, not each operation",
                      highlight=False)
    console.print(f"  {'operation':<10} {'requests':>9} {'req/s':>8} {'errors':>7} "
                  f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for name, op in [*d["operations"].items(), ("all", total)]:
        console.print(f"  {name:<10} {op['requests']:>9,} {op['throughput_rps']:>8,.0f} "
                      f"{op['errors']:>7} {_ms(op['p50_ms']):>8} {_ms(op['p95_ms']):>8} "
                      f"{_ms(op['p99_ms']):>8}", highlight=False)
    console.print(f"  pass: p95 < {d['sla']['p95_ms']:g} ms and error rate < "
                  f"{d['sla']['error_rate_pct']:g} % (error rate {total['error_rate_pct']:g} %)")
    for name, why in d["skipped"].items():
        console.print(f"  [dim]skipped {name}: {why}[/]")
    wrk = d.get("generator_check")
    if wrk:
        console.print(f"  generator check on {wrk['route']}: httpx {wrk['httpx_rps']:,.0f} "
                      f"req/s, wrk {wrk['wrk_rps']:,.0f} req/s (ratio "
                      f"{wrk['httpx_to_wrk']:.2f})")
    for t in d.get("targets", []):
        if t["met"] is None:
            console.print(f"  target {t['what']}: p95 <= {t['target_p95_ms']:g} ms: not "
                          f"measured ({t['why']})", highlight=False)
            continue
        console.print(f"  target {t['what']}: p95 {_ms(t['p95_ms'])} ms <= "
                      f"{t['target_p95_ms']:g} ms, {t['errors']} errors: "
                      f"{'[green]met[/]' if t['met'] else '[yellow]missed[/]'}",
                      highlight=False)
    if d.get("error"):
        console.print(f"  [red]error:[/] {d['error']}")


@app.command()
def pgbench(
    clients: Annotated[int, typer.Option("--clients", "-c", help="Concurrent clients.")] = 20,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="pgbench threads.")] = 4,
    duration: Annotated[int, typer.Option("--duration", "-T", help="Seconds.")] = 300,
    select_only: Annotated[bool, typer.Option("--select-only/--read-write", "-S",
                                              help="pgbench -S (the runbook's).")] = True,
    scale: Annotated[int | None, typer.Option(
        help="Dataset scale; re-initialises only if it differs (default: as it is, or 10).",
        show_default=False)] = None,
    protocol: Annotated[str, typer.Option("--protocol", "-M",
                                          help="simple, extended or prepared.")] = "simple",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """pgbench against the primary on its own database: TPS, latency, p95 against the SLA.
    Exit 0 ok, 1 warn, 2 critical."""
    from cardmint.ops.loadtest.pgbench import PgbenchOptions, run_pgbench

    opts = PgbenchOptions(clients=clients, jobs=jobs, duration_s=duration,
                          select_only=select_only, scale=scale, protocol=protocol)
    report = run(run_pgbench(settings(home), opts))
    emit(report, as_json, render_pgbench)
    raise typer.Exit(EXIT[report["status"]])


@app.command(name="app")
def app_(
    duration: Annotated[float, typer.Option(help="Measured seconds.")] = 30.0,
    concurrency: Annotated[int, typer.Option(help="Concurrent clients.")] = 20,
    mix: Annotated[str, typer.Option(help="Weights: search=40,lookup=30,identify=20,...")]
    = "search=40,lookup=30,identify=20,capture=5,inventory=5",
    url: Annotated[str | None, typer.Option(help="A running API (default: start one).",
                                            show_default=False)] = None,
    warmup: Annotated[float, typer.Option(help="Seconds sent first and not counted.")] = 2.0,
    max_requests: Annotated[int, typer.Option(
        help="Stop after this many requests (httpx; wrk stops at --duration).")] = 5_000_000,
    generator: Annotated[str | None, typer.Option(
        help="wrk (the mix precomputed into wrk's Lua; overall figures) or httpx (this "
             "process; per operation too). Default: wrk when installed, else httpx.",
        show_default=False)] = None,
    wrk: Annotated[bool, typer.Option(
        "--wrk/--no-wrk", help="Also run httpx and wrk on one route (the generator check).")
    ] = True,
    workers: Annotated[int, typer.Option(
        help="Server processes of the `cardmint serve` it starts (without --url).")] = 2,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The application-level test: search, lookup, identify (and captures, inventory where
    served) from a separate process, wrk by default. Pass: p95 < 100 ms, errors < 0.1 %.
    Exit 0 or 2.
    Also reported, not judged: the targets (mix p95 <= 25 ms with no error, lookup
    <= 10 ms, search <= 25 ms)."""
    from cardmint.ops.loadtest.app import AppOptions, run_app_loadtest

    opts = AppOptions(duration_s=duration, concurrency=concurrency, mix=mix, url=url,
                      warmup_s=warmup, max_requests=max_requests, compare_wrk=wrk,
                      workers=workers, generator=generator)
    report = run(run_app_loadtest(settings(home), opts))
    emit(report, as_json, render_app)
    raise typer.Exit(EXIT[report["status"]])
