"""A Grafana dashboard with the panels of the ops dashboard page (`/dashboard`), on
CardMint's `/metrics` through Prometheus.

It charts the expressions the alert rules judge (`rules.py`), with the settings'
thresholds as colours and lines, so the board, the exported rules and the built-in
monitor agree. `cardmint monitor export-dashboard` writes it; import it in Grafana
(Dashboards › New › Import) and pick the Prometheus data source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cardmint.config import Settings
from cardmint.ops.monitor.rules import (
    CONNECTIONS,
    CPU_PCT,
    IS_PRIMARY,
    LAG_S,
    MEMORY_PCT,
    P95_MS,
    POOL_PCT,
    RATE_WINDOW,
    READS,
    STORAGE_PCT,
    WRITES,
    query_latency_ms,
)

UID = "cardmint-ops"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24  # Grafana's grid
APP_DATABASES = 'datname!~"postgres|template0|template1"'


@dataclass
class Panel:
    kind: str  # timeseries, stat, table
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "none"
    steps: list[float] = field(default_factory=list)  # warn, critical: colours and lines
    width: int = 8
    height: int = 7
    description: str = ""
    instant: bool = False  # tables and stats of the current value
    options: dict[str, Any] = field(default_factory=dict)


def _thresholds(steps: list[float]) -> dict[str, Any]:
    colours = ["green", "orange", "red"]
    return {"mode": "absolute", "steps": [{"color": "green", "value": None}] + [
        {"color": colours[min(i + 1, 2)], "value": v} for i, v in enumerate(steps)]}


def _render(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel.steps)}
    if panel.kind == "timeseries":
        defaults["custom"] = {"thresholdsStyle": {"mode": "line" if panel.steps else "off"}}
        defaults["color"] = {"mode": "palette-classic"}
    elif panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
    out: dict[str, Any] = {
        "id": pid, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend, "instant": panel.instant,
                     "range": not panel.instant, **({"format": "table"}
                                                   if panel.kind == "table" else {})}
                    for i, (expr, legend) in enumerate(panel.targets)],
        "options": panel.options,
    }
    if panel.kind == "table":  # one row per label set, a column per query, named
        names = {f"Value #{t['refId']}": t["legendFormat"] for t in out["targets"]}
        out["transformations"] = [{"id": "merge", "options": {}},
                                  {"id": "organize", "options": {
                                      "excludeByName": {"Time": True},
                                      "renameByName": names}}]
    return out


def _rows(s: Settings) -> list[tuple[str, list[Panel]]]:
    latency = [s.latency_p95_warn_ms, s.latency_p95_critical_ms]
    pool = [s.pool_utilization_warn_pct, s.pool_utilization_critical_pct]
    lag = [s.replica_lag_warn_s, s.replica_lag_critical_s]
    storage = [s.storage_warn_pct, s.storage_critical_pct]
    stat = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    ratio = f"max by (node) ({READS} / {WRITES}) and on (node) {IS_PRIMARY}"
    return [
        ("Nodes", [
            Panel("table", "Nodes", [
                ("max by (node) (pg_up)", "up"),
                ("max by (node) (pg_replication_is_replica)", "replica"),
                ("max by (node) (cardmint_node_timeline_id)", "timeline"),
                (LAG_S, "lag s")], width=8, instant=True,
                description="Every node: answering (1), replica (1) or primary (0), its "
                            "timeline (a failover raises it) and its replay lag"),
            Panel("timeseries", "Replica lag", [(LAG_S, "{{node}}")], "s", lag,
                  description="Runbook: under 10 s normal, alert over 30 s"),
            Panel("timeseries", "Replica lag (bytes to replay)", [(
                "max by (application_name) (pg_stat_replication_pg_wal_lsn_diff)",
                "{{application_name}}")], "bytes"),
        ]),
        ("Health checks", [
            Panel("stat", "p95 query latency", [(P95_MS, "p95")], "ms", latency, 4,
                  options=stat),
            Panel("stat", "Pool utilization", [(f"max({POOL_PCT})", "busiest pool")],
                  "percent", pool, 4, options=stat),
            Panel("stat", "Replica lag", [(f"max({LAG_S})", "worst replica")], "s", lag, 4,
                  options=stat),
            Panel("stat", "Storage used", [(f"max({STORAGE_PCT})", "fullest node")],
                  "percent", storage, 4, options=stat),
            Panel("stat", "Connections", [(f"max({CONNECTIONS})", "busiest node")], "none",
                  [float(s.pgbouncer_connections)], 4, options=stat,
                  description="PgBouncer is recommended above the threshold"),
            Panel("stat", "Backup age", [(
                "(time() - max(cardmint_backup_last_success_timestamp_seconds)) / 3600",
                "hours")], "h", [s.backup_age_warn_h, s.backup_age_critical_h], 4,
                options=stat),
            Panel("stat", "WAL archive backlog", [
                ("max(cardmint_wal_archive_oldest_ready_age_seconds)", "oldest waiting")],
                "s", [s.archive_backlog_warn_s], 4, options=stat),
            Panel("stat", "WAL archive failures (1 h)", [(
                "sum(increase(pg_stat_archiver_failed_count_total[1h]))", "failures")],
                "none", [1.0], 4, options=stat),
            Panel("stat", "Built-in monitor: alerts firing", [
                ("max by (severity) (cardmint_alerts_firing)", "{{severity}}")], "none",
                [1.0], 4, options=stat),
            Panel("stat", "Open incidents", [
                ("max by (severity) (cardmint_incidents_open)", "{{severity}}")], "none",
                [1.0], 4, options=stat),
            Panel("stat", "Maintenance window", [
                ("max(cardmint_maintenance_window_open)", "open")], "none", [], 4,
                options={**stat, "colorMode": "value"},
                description="1 inside a maintenance window (disruptive commands may run)"),
            Panel("stat", "Database reachable", [
                ("min(cardmint_database_up)", "from the application")], "none", [], 4,
                options=stat),
        ]),
        ("Latency and pools (the last hour)", [
            Panel("timeseries", "Query latency on the primary", [
                (query_latency_ms(0.5), "p50"), (P95_MS, "p95"),
                (query_latency_ms(0.99), "p99")], "ms", latency, 12),
            Panel("timeseries", "Pool utilization", [(POOL_PCT, "{{instance}}")], "percent",
                  pool, 12),
            Panel("timeseries", "HTTP p95 by route", [(
                "histogram_quantile(0.95, sum by (le, route) (rate("
                f"cardmint_http_request_duration_seconds_bucket[{RATE_WINDOW}]))) * 1000",
                "{{route}}")], "ms", latency, 24),
        ]),
        ("Workload", [
            Panel("timeseries", "Transactions per second", [(
                f"sum by (node) (rate(pg_stat_database_xact_commit_total{{{APP_DATABASES}}}"
                f"[{RATE_WINDOW}]) + rate(pg_stat_database_xact_rollback_total"
                f"{{{APP_DATABASES}}}[{RATE_WINDOW}]))", "{{node}}")], "ops"),
            Panel("timeseries", "Rows read per row written (primary)", [(ratio, "{{node}}")],
                  "none", [s.read_replica_read_write_ratio],
                  description="Runbook: add a read replica over 5:1"),
            Panel("timeseries", "Connections by state", [(
                "sum by (state) (max by (node, datname, state) (cardmint_node_connections))",
                "{{state}}")], "none", [float(s.pgbouncer_connections)]),
            Panel("timeseries", "Intake queue", [(
                'sum by (status) (cardmint_intake_jobs{status=~"queued|running"})',
                "{{status}}")], "none", width=12),
            Panel("timeseries", "Job outcomes per hour", [(
                'sum by (status) (delta(cardmint_intake_jobs{status=~"succeeded|failed"}[1h]))',
                "{{status}}")], "none", width=12),
        ]),
        ("Backups and drills", [
            Panel("stat", "Latest backup size", [
                ("max(cardmint_backup_last_size_bytes)", "size")], "bytes", [], 6,
                options=stat),
            Panel("stat", "Latest backup duration", [
                ("max(cardmint_backup_last_duration_seconds)", "duration")], "s", [], 6,
                options=stat),
            Panel("table", "Latest drills", [
                ("max by (kind) (cardmint_drill_last_success)", "passed"),
                ("max by (kind) (cardmint_drill_last_detection_seconds)", "detection s"),
                ("max by (kind) (cardmint_drill_last_promotion_seconds)", "promotion s"),
                ("max by (kind) (cardmint_drill_last_write_outage_seconds)", "outage s"),
                ("max by (kind) (cardmint_drill_last_lost_writes)", "lost writes"),
                ("(time() - max by (kind) (cardmint_drill_last_timestamp_seconds)) / 86400",
                 "days ago")], width=12, instant=True),
        ]),
        ("Host", [
            Panel("timeseries", "CPU", [(CPU_PCT, "{{host}}")], "percent",
                  [s.scale_cpu_pct], 12,
                  description=f"Scale up when over {s.scale_cpu_pct:g} % for "
                              f"{s.scale_cpu_for_min:g} min"),
            Panel("timeseries", "Memory in use", [(MEMORY_PCT, "{{host}}")], "percent",
                  [s.scale_memory_pct], 12,
                  description=f"Scale up when over {s.scale_memory_pct:g} % for "
                              f"{s.scale_memory_for_min:g} min"),
        ]),
    ]


def dashboard(s: Settings) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in _rows(s):
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1}, "panels": []})
        pid, y, x, tallest = pid + 1, y + 1, 0, 0
        for panel in row:
            if x + panel.width > WIDTH:
                x, y, tallest = 0, y + tallest, 0
            panels.append(_render(panel, pid, x, y))
            pid, x, tallest = pid + 1, x + panel.width, max(tallest, panel.height)
        y += tallest
    return {
        "title": "CardMint operations", "uid": UID, "tags": ["cardmint", "postgresql"],
        "description": "The ops dashboard page's panels on CardMint's /metrics; generated "
                       "by `cardmint monitor export-dashboard`",
        "timezone": "utc", "editable": True, "graphTooltip": 1, "schemaVersion": 39,
        "version": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus",
                                 "type": "datasource", "query": "prometheus",
                                 "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }
