"""How `stats` and `test-card` look to people."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cardmint.cli.output import console, counts, measured


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.1f} MiB"


def render_stats(d: dict[str, Any]) -> None:
    lat = d.get("latency", {})
    if "primary" in lat:
        p, r = lat["primary"], lat["replica"]
        console.print(f"probe latency  primary p50 {measured(p['p50_ms'], 'ms')}, p95 "
                      f"{measured(p['p95_ms'], 'ms')}, p99 {measured(p['p99_ms'], 'ms')}; "
                      f"replica p95 {measured(r['p95_ms'], 'ms')}")
    a = d.get("activity")
    if a:
        console.print(f"activity over {a['window_s']} s: {a['tps']} TPS, reads/s "
                      f"{a['reads_per_s']}, writes/s {a['writes_per_s']}, read/write "
                      f"{a['read_write_ratio']}, cache hit {a['cache_hit_pct_total']} %")
    nodes = Table(title="nodes")
    for col in ("node", "role", "lag s", "SELECT 1 ms", "streaming"):
        nodes.add_column(col)
    for n in d["nodes"]:
        nodes.add_row(n["name"], n.get("role", "[red]unreachable[/]"), str(n.get("lag_s", "")),
                      str(n.get("select1_ms", "")),
                      "" if n.get("role") != "replica" else str(n.get("streaming", "")))
    console.print(nodes)
    if "connections" in d:
        c = d["connections"]
        console.print(f"connections: {c['total']} of {c['max_connections']}; by state: "
                      f"{counts(c['by_state'])}; by application: "
                      f"{counts(c['by_application'])}")
    for title, rows, cols in (
        ("slowest queries (pg_stat_statements)", d.get("slow_queries", []),
         ("mean_ms", "calls", "total_ms", "query")),
        ("tables", d.get("tables", []),
         ("table", "total_bytes", "live_tuples", "dead_tuples", "dead_pct")),
    ):
        table = Table(title=title)
        for col in cols:
            table.add_column(col, overflow="fold")
        for row in rows[:10]:
            table.add_row(*(_mib(row[c]) if c.endswith("_bytes") else str(row[c])
                            for c in cols))
        console.print(table)


def render_test_card(d: dict[str, Any]) -> None:
    table = Table(title=f"test-card: {'[green]ok[/]' if d['ok'] else '[bold red]failed[/]'} "
                        f"(schema {d['revision']}, code {d['head']})")
    for col in ("step", "ok", "ms", "detail"):
        table.add_column(col)
    for s in d["steps"]:
        table.add_row(s["name"], "[green]yes[/]" if s["ok"] else "[red]no[/]",
                      f"{s['duration_ms']:.1f}", s["detail"])
    console.print(table)
