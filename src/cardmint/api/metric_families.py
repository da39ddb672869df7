"""CardMint's figures as Prometheus metric families, by Prometheus's conventions: base
units (seconds, bytes) in the names, histograms as histograms, counters ending in
`_total`, HELP on every family.

Figures PostgreSQL itself keeps carry postgres_exporter's names (`pg_up`,
`pg_replication_lag_seconds`, `pg_stat_database_*`, `pg_stat_user_tables_*`...), with a
`node` label because one CardMint reports every node; postgres_exporter's counters have
no `_total`, ours do (promtool requires it). The README lists which of ours
postgres_exporter replaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from cardmint.db import Database
from cardmint.ops.incidents.severity import SEVERITIES
from cardmint.ops.monitor.scrape import (
    DATABASE_COUNTERS,
    TABLE_COUNTERS,
    AppScrape,
    HostScrape,
    NodeScrape,
    Scrape,
)

SEVERITY_CODES = tuple(SEVERITIES)


def _gauge(name: str, text: str, labels: list[str],
           rows: list[tuple[list[str], float | None]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=labels)
    for values, value in rows:
        if value is not None:
            family.add_metric(values, float(value))
    return family


def _counter(name: str, text: str, labels: list[str],
             rows: list[tuple[list[str], float | None]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=labels)
    for values, value in rows:
        if value is not None:
            family.add_metric(values, float(value))
    return family


def data_layer(db: Database) -> Iterator[Metric]:
    """This process's pools and query latency (the histogram never resets)."""
    latency = HistogramMetricFamily(
        "cardmint_db_query_duration_seconds",
        "Query latency through the data layer, pool wait included, by target",
        labels=["target"])
    for target, h in db.latency.items():
        buckets = [("+Inf" if bound == float("inf") else repr(bound), float(n))
                   for bound, n in h.cumulative()]
        latency.add_metric([target], buckets, sum_value=h.lifetime_sum_s)
    yield latency
    pool = db.pool_stats()
    pools = [("primary", pool), *((r["name"], r) for r in pool["replicas"])]
    for key, suffix, text in (("in_use", "in_use", "Connections lent out, by pool"),
                              ("size", "open", "Connections open, by pool"),
                              ("max", "max", "The pool's maximum size, by pool")):
        yield _gauge(f"cardmint_db_pool_connections_{suffix}", text, ["pool"],
                     [([name], figures[key]) for name, figures in pools])
    yield _gauge("cardmint_db_pool_waiting_acquires",
                 "Queries waiting for a connection of the primary pool", [],
                 [([], pool["waiting"])])
    replicas = pool["replicas"]
    yield _gauge("cardmint_db_replica_lag_seconds",
                 "Replica lag as the data layer's last check saw it", ["replica"],
                 [([r["name"]], r["lag_s"]) for r in replicas])
    yield _gauge("cardmint_db_replica_healthy",
                 "1 if the data layer may send stale-tolerant reads to this replica",
                 ["replica"], [([r["name"]], 1.0 if r["healthy"] else 0.0) for r in replicas])


def nodes(found: list[NodeScrape]) -> Iterator[Metric]:
    up = [n for n in found if n.up]
    yield _gauge("pg_up", "1 if the node answered this scrape", ["node"],
                 [([n.name], 1.0 if n.up else 0.0) for n in found])
    yield _gauge("pg_replication_is_replica", "1 if the node is in recovery (a replica)",
                 ["node"], [([n.name], float(bool(n.is_replica))) for n in up])
    yield _gauge("pg_replication_lag_seconds",
                 "Replay lag behind the primary (0 on the primary, and when all received "
                 "WAL is replayed)", ["node"], [([n.name], n.lag_s) for n in up])
    yield _gauge("cardmint_node_timeline_id", "The node's timeline: a promotion raises it",
                 ["node"], [([n.name], n.timeline) for n in up])
    yield _gauge("pg_settings_max_connections", "The server's max_connections", ["node"],
                 [([n.name], n.max_connections) for n in up])
    # postgres_exporter's pg_stat_activity_count: promtool rejects `_count` on a gauge
    yield _gauge("cardmint_node_connections", "Client connections by database and state "
                 "(this scrape's own included, as it counts against max_connections)",
                 ["node", "datname", "state"],
                 [([n.name, d, st], c) for n in up for d, st, c in n.activity])
    yield _gauge("pg_database_size_bytes", "Disk space used by the database",
                 ["node", "datname"],
                 [([n.name, d["datname"]], d["size_bytes"]) for n in up for d in n.databases])
    yield _gauge("pg_stat_database_numbackends", "Backends connected to the database",
                 ["node", "datid", "datname"],
                 [([n.name, d["datid"], d["datname"]], d["numbackends"])
                  for n in up for d in n.databases])
    for column in DATABASE_COUNTERS:
        yield _counter(f"pg_stat_database_{column}", f"pg_stat_database.{column}",
                       ["node", "datid", "datname"],
                       [([n.name, d["datid"], d["datname"]], d[column])
                        for n in up for d in n.databases])
    for column in TABLE_COUNTERS:
        yield _counter(f"pg_stat_user_tables_{column}", f"pg_stat_user_tables.{column}",
                       ["node", "datname", "schemaname", "relname"],
                       [([n.name, t["datname"], t["schemaname"], t["relname"]], t[column])
                        for n in up for t in n.tables])
    yield from _storage(up)
    yield from _replication(up)


def _storage(up: list[NodeScrape]) -> Iterator[Metric]:
    yield _gauge("pg_wal_size_bytes", "Size of the WAL directory", ["node"],
                 [([n.name], n.wal_bytes) for n in up])
    yield _gauge("pg_wal_segments", "WAL segment files in the WAL directory", ["node"],
                 [([n.name], n.wal_segments) for n in up])
    yield _gauge("cardmint_storage_used_bytes",
                 "Storage used, as the storage check measures it (the data directory's "
                 "filesystem, or database + WAL against CARDMINT_STORAGE_CAPACITY_BYTES)",
                 ["node"], [([n.name], n.storage_used_bytes) for n in up])
    yield _gauge("cardmint_storage_free_bytes", "Storage still free, measured as above",
                 ["node"], [([n.name], n.storage_free_bytes) for n in up])
    archived = [n for n in up if n.archiver]
    yield _counter("pg_stat_archiver_archived_count", "WAL segments archived",
                   ["node"], [([n.name], _a(n, "archived_count")) for n in archived])
    yield _counter("pg_stat_archiver_failed_count", "Failed attempts to archive a segment",
                   ["node"], [([n.name], _a(n, "failed_count")) for n in archived])
    yield _gauge("pg_stat_archiver_last_archive_age",
                 "Seconds since the last segment was archived", ["node"],
                 [([n.name], _a(n, "last_archive_age_s")) for n in archived])
    yield _gauge("cardmint_wal_archive_ready_segments",
                 "Segments written but not yet archived (the archive backlog)", ["node"],
                 [([n.name], _a(n, "ready")) for n in archived])
    yield _gauge("cardmint_wal_archive_oldest_ready_age_seconds",
                 "Age of the oldest segment waiting to be archived (0 with none)", ["node"],
                 [([n.name], _a(n, "oldest_ready_s")) for n in archived])


def _a(n: NodeScrape, key: str) -> Any:
    return (n.archiver or {}).get(key)


def _replication(up: list[NodeScrape]) -> Iterator[Metric]:
    yield _gauge("pg_stat_replication_pg_wal_lsn_diff",
                 "Bytes the standby has still to replay, as its primary sees it",
                 ["node", "application_name", "client_addr", "state", "slot_name"],
                 [([n.name, r["application_name"], r["client_addr"], r["state"],
                    r["slot_name"]], r["lag_bytes"]) for n in up for r in n.senders])
    yield _gauge("pg_replication_slots_pg_wal_lsn_diff",
                 "WAL bytes the replication slot holds back", ["node", "slot_name", "database"],
                 [([n.name, s["slot_name"], s["database"]], s["retained_bytes"])
                  for n in up for s in n.slots])
    yield _gauge("pg_replication_slots_active", "1 if the slot is in use",
                 ["node", "slot_name", "database"],
                 [([n.name, s["slot_name"], s["database"]], float(s["active"]))
                  for n in up for s in n.slots])


def application(app: AppScrape) -> Iterator[Metric]:
    yield _gauge("cardmint_database_up",
                 "1 if the application's data layer reached the primary this scrape", [],
                 [([], 1.0 if app.up else 0.0)])
    if not app.up or app.error:
        return
    yield _gauge("cardmint_intake_jobs", "Processing jobs by kind and status: queued and "
                 "running are the queue; succeeded and failed, the outcomes so far (counted "
                 "once a minute)",
                 ["kind", "status"],
                 [([k, st], n) for k, st, n in [*app.queue, *(app.outcomes or [])]])
    yield _gauge("cardmint_alerts_firing", "The built-in monitor's firing alerts, by severity",
                 ["severity"], [([sev], app.alerts_firing.get(sev, 0)) for sev in SEVERITY_CODES])
    yield _gauge("cardmint_incidents_open", "Incidents open or mitigated, by severity",
                 ["severity"],
                 [([sev], app.incidents_open.get(sev, 0)) for sev in SEVERITY_CODES])
    backup = app.last_backup or {}
    yield _gauge("cardmint_backup_last_success_timestamp_seconds",
                 "When the newest successful base backup finished", [],
                 [([], backup.get("finished_at"))])
    yield _gauge("cardmint_backup_last_size_bytes", "Size of the newest successful backup",
                 [], [([], backup.get("size_bytes"))])
    yield _gauge("cardmint_backup_last_duration_seconds",
                 "How long the newest successful backup took", [],
                 [([], backup.get("duration_s"))])
    for key, name, text in (
            ("finished_at", "cardmint_drill_last_timestamp_seconds",
             "When the latest drill of this kind finished"),
            ("ok", "cardmint_drill_last_success", "1 if the latest drill of this kind passed"),
            ("detection_s", "cardmint_drill_last_detection_seconds",
             "The latest drill's time to detect the lost primary"),
            ("promotion_s", "cardmint_drill_last_promotion_seconds",
             "The latest drill's time to promote a replica"),
            ("write_outage_s", "cardmint_drill_last_write_outage_seconds",
             "The latest drill's write outage"),
            ("lost_writes", "cardmint_drill_last_lost_writes",
             "Acknowledged writes the latest drill lost")):
        yield _gauge(name, text, ["kind"],
                     [([d["kind"]], None if d.get(key) is None else float(d[key]))
                      for d in app.drills])
    yield _gauge("cardmint_monitor_last_sample_timestamp_seconds",
                 "When the built-in monitor last took a sample", [],
                 [([], app.last_sample_at.timestamp() if app.last_sample_at else None)])


def host(h: HostScrape) -> Iterator[Metric]:
    yield _counter("cardmint_host_cpu_seconds", "CPU time of the host, all CPUs, by mode",
                   ["host", "mode"], [([h.name, mode], v) for mode, v in h.cpu_seconds.items()])
    yield _gauge("cardmint_host_memory_total_bytes", "The host's memory", ["host"],
                 [([h.name], h.memory_total_bytes)])
    yield _gauge("cardmint_host_memory_available_bytes",
                 "Memory the host can still give without swapping (MemAvailable)", ["host"],
                 [([h.name], h.memory_available_bytes)])


def scraped(s: Scrape) -> Iterator[Metric]:
    yield from nodes(s.nodes)
    if s.app is not None:
        yield from application(s.app)
    yield from host(s.host)
    yield _gauge("cardmint_maintenance_window_open",
                 "1 inside a maintenance window (disruptive commands may run)", [],
                 [([], 1.0 if s.maintenance_open else 0.0)])
    yield _gauge("cardmint_scrape_errors", "Readings this scrape could not take (see the log "
                 "at debug level)", [], [([], len(s.errors))])
    yield _gauge("cardmint_scrape_duration_seconds", "How long reading the figures took",
                 [], [([], s.duration_s)])
