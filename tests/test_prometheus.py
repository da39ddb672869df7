"""Monitoring in Prometheus's own terms, checked with Prometheus's own tool: /metrics
passes `promtool check metrics`, the exported alert rules pass `promtool check rules`
and their `promtool test rules` cases (every alert fires and resolves), the rules and
the built-in monitor come from one definition, and the Grafana board's expressions
name only metrics /metrics exposes.

promtool comes from Debian's prometheus package (`make promtool`); without it those
checks are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cardmint.api.app import create_app
from cardmint.catalog.load import load_catalog
from cardmint.config import Settings, secret
from cardmint.db import Database
from cardmint.db.connect import connection
from cardmint.ops.monitor import grafana, prometheus, promtests, rules
from cardmint.ops.monitor.runbook import anchors, link
from cardmint.ops.monitor.scrape import Scraper
from support import TestCluster, serving

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
PROMTOOL = shutil.which("promtool") or str(Path(sys.executable).parent / "promtool")
needs_promtool = pytest.mark.skipif(
    not os.access(PROMTOOL, os.X_OK),
    reason="promtool is missing (Debian's prometheus package: `make promtool` unpacks it)")
DEFAULTS = Settings(_env_file=None, home="/nonexistent")  # type: ignore[call-arg]


def promtool(*args: str, stdin: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


# -- /metrics ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def exposition(pg: TestCluster) -> AsyncIterator[str]:
    """/metrics of an app on the session cluster, after some traffic, with one row in
    each operations table it reports (removed afterwards)."""
    settings = pg.settings()
    async with connection(secret(settings.migration_url), settings) as conn:
        await load_catalog(conn, sample=True)
        finished = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        await conn.execute(
            "INSERT INTO backups (id, status, started_at, finished_at, size_bytes, duration_s)"
            " VALUES ('t-metrics', 'ok', $1, $2, 123456, 7.5)",
            finished - timedelta(seconds=8), finished)
        drill = await conn.fetchval(
            "INSERT INTO drills (kind, started_at, finished_at, ok, report) VALUES "
            "('failover-t', $1, $2, true, '{\"write_outage_s\": 1.25, \"lost_writes\": 0}')"
            " RETURNING id", finished - timedelta(seconds=30), finished)
        alert = await conn.fetchval(
            "INSERT INTO alerts (name, node, severity, status, message) VALUES "
            "('t_metrics', 'nodeX', 'P1', 'firing', 'test') RETURNING id")
        try:
            app = create_app(settings)
            async with serving(app) as client:
                for _ in range(3):
                    assert (await client.get("/v1/cards/base1-4")).status_code == 200
                await client.get("/v1/cards/nope-1")
                first = (await client.get("/metrics"))
                text = (await client.get("/metrics")).text
            assert first.status_code == 200
            assert first.headers["content-type"].startswith("text/plain")
            yield text
        finally:
            await conn.execute("DELETE FROM backups WHERE id = 't-metrics'")
            await conn.execute("DELETE FROM drills WHERE id = $1", drill)
            await conn.execute("DELETE FROM alerts WHERE id = $1", alert)


def samples(text: str, name: str) -> dict[str, float]:
    """{label text: value} of one metric's samples."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def exposed_names(text: str) -> set[str]:
    """Every series name the text can give a query: counters' with _total, and a
    histogram's _bucket, _count and _sum."""
    out = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out.add(name)
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return out


@needs_promtool
async def test_metrics_pass_promtool(exposition: str) -> None:
    done = promtool("check", "metrics", stdin=exposition)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", (
        done.stdout + done.stderr)


async def test_every_family_has_help_and_a_base_unit(exposition: str) -> None:
    helped = set(re.findall(r"^# HELP (\S+) \S", exposition, re.M))
    typed = {name for name, _ in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M)}
    assert typed and typed == helped
    assert not [n for n in typed if re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", n)]
    assert "cardmint_db_query_latency_ms" not in exposition  # a gauge with quantiles, gone


async def test_metrics_expose_the_runbooks_critical_figures(exposition: str) -> None:
    text = exposition
    route = samples(text, "cardmint_http_request_duration_seconds_count")
    assert route['{method="GET",route="/v1/cards/{card_id}",status="200"}'] == 3
    assert route['{method="GET",route="/v1/cards/{card_id}",status="404"}'] == 1
    queries = samples(text, "cardmint_db_query_duration_seconds_bucket")
    assert sum(v for k, v in queries.items() if 'le="+Inf"' in k) >= 4  # one per lookup
    assert '{le="0.15",target="primary"}' in queries
    assert samples(text, "cardmint_db_pool_connections_max")['{pool="primary"}'] == 20
    assert '{pool="primary"}' in samples(text, "cardmint_db_pool_connections_in_use")
    assert samples(text, "pg_up") == {'{node="node1"}': 1, '{node="node2"}': 1}
    assert samples(text, "pg_replication_is_replica") == {'{node="node1"}': 0,
                                                          '{node="node2"}': 1}
    assert set(samples(text, "pg_replication_lag_seconds")) == {'{node="node1"}',
                                                               '{node="node2"}'}
    lag_bytes = samples(text, "pg_stat_replication_pg_wal_lsn_diff")
    assert len(lag_bytes) == 1 and 'application_name="node2"' in next(iter(lag_bytes))
    used, free = (samples(text, f"cardmint_storage_{k}_bytes") for k in ("used", "free"))
    assert used['{node="node1"}'] > 0 and free['{node="node1"}'] > 0
    states = samples(text, "cardmint_node_connections")
    assert any('state="active"' in k and 'node="node1"' in k for k in states)
    assert 0 < sum(v for k, v in states.items() if 'node="node1"' in k) <= samples(
        text, "pg_settings_max_connections")['{node="node1"}']
    assert samples(text, "pg_stat_archiver_archived_count_total")['{node="node1"}'] >= 1
    assert '{node="node1"}' in samples(text, "pg_stat_archiver_failed_count_total")
    assert '{node="node1"}' in samples(text, "cardmint_wal_archive_ready_segments")
    commits = samples(text, "pg_stat_database_xact_commit_total")
    assert any('datname="cardmint"' in k and 'node="node1"' in k and v > 0
               for k, v in commits.items())
    reads = samples(text, "pg_stat_user_tables_idx_tup_fetch_total")
    assert any('relname="cards"' in k for k in reads)
    assert samples(text, "cardmint_backup_last_success_timestamp_seconds")[""] == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert samples(text, "cardmint_backup_last_size_bytes")[""] == 123456
    assert samples(text, "cardmint_drill_last_write_outage_seconds")[
        '{kind="failover-t"}'] == 1.25
    assert samples(text, "cardmint_drill_last_success")['{kind="failover-t"}'] == 1
    assert samples(text, "cardmint_alerts_firing")['{severity="P1"}'] >= 1
    assert set(samples(text, "cardmint_incidents_open")) == {
        '{severity="P0"}', '{severity="P1"}', '{severity="P2"}'}
    assert "# TYPE cardmint_intake_jobs gauge" in text
    assert samples(text, "cardmint_database_up") == {"": 1}
    assert samples(text, "cardmint_scrape_errors") == {"": 0}
    cpu = samples(text, "cardmint_host_cpu_seconds_total")
    assert any('mode="idle"' in k for k in cpu) and all(v >= 0 for v in cpu.values())
    assert sum(samples(text, "cardmint_host_memory_total_bytes").values()) > 0
    assert set(samples(text, "cardmint_maintenance_window_open").values()) <= {0.0, 1.0}


async def test_a_node_or_database_out_of_reach_is_a_reading(pg: TestCluster) -> None:
    """An app whose DSN reaches nothing still answers /metrics, saying so: the node is
    pg_up 0 and the data layer cardmint_database_up 0."""
    settings = pg.settings(database_url="postgresql://cardmint_app:x@127.0.0.1:1/cardmint",
                           replica_urls=[],
                           monitor_urls=["postgresql://cardmint_monitor:x@127.0.0.1:1/cardmint"],
                           connect_timeout_s=1)
    app = create_app(settings)
    async with serving(app, wait_open=False) as client:
        done = await client.get("/metrics")
    assert done.status_code == 200
    assert samples(done.text, "pg_up") == {'{node="127.0.0.1:1"}': 0}
    assert samples(done.text, "cardmint_database_up") == {"": 0}
    assert samples(done.text, "pg_replication_is_replica") == {}


async def test_finished_jobs_are_counted_once_a_minute_the_queue_every_scrape(
        pg: TestCluster, db: Database) -> None:
    clock = [1000.0]
    scraper = Scraper(pg.settings(), outcomes_every_s=60, clock=lambda: clock[0])

    async def jobs() -> dict[tuple[str, str], int]:
        app = (await scraper.read(db)).app
        assert app is not None and app.up and app.outcomes is not None
        return {(k, st): n for k, st, n in [*app.queue, *app.outcomes]}

    before = await jobs()
    settings = pg.settings()
    async with connection(secret(settings.migration_url), settings) as conn:
        captures = [await conn.fetchval(
            "INSERT INTO captures (image_ref) VALUES ('t-scrape') RETURNING id")
            for _ in range(2)]
        try:
            await conn.execute(
                "INSERT INTO processing_jobs (capture_id, kind, status, finished_at) VALUES "
                "($1, 't_scrape', 'succeeded', now()), ($2, 't_scrape', 'queued', NULL)",
                *captures)
            clock[0] += 59
            soon = await jobs()
            assert soon[("t_scrape", "queued")] == 1  # the queue is read every scrape
            assert ("t_scrape", "succeeded") not in soon  # outcomes: the last count
            assert {k: v for k, v in soon.items() if k[1] != "queued"} == {
                k: v for k, v in before.items() if k[1] != "queued"}
            clock[0] += 1
            assert (await jobs())[("t_scrape", "succeeded")] == 1
        finally:
            await conn.execute("DELETE FROM captures WHERE id = ANY($1::bigint[])", captures)


# -- the rules: one definition, two evaluators ------------------------------------------


def export(settings: Settings, where: Path) -> tuple[Path, Path]:
    rules_file, tests_file = where / "rules.yml", where / "rules.test.yml"
    rules_file.write_text(prometheus.to_yaml(prometheus.rules_document(settings)))
    tests_file.write_text(prometheus.to_yaml(
        prometheus.tests_document(settings, rules_file.name), prometheus.TESTS_HEADER))
    return rules_file, tests_file


CHANGED = DEFAULTS.model_copy(update={
    "pool_utilization_warn_pct": 60.0, "pool_utilization_critical_pct": 70.0,
    "replica_lag_critical_s": 12.0, "latency_p95_critical_ms": 120.0,
    "scale_cpu_pct": 50.0, "scale_cpu_for_min": 3.0, "pgbouncer_connections": 40})


@needs_promtool
@pytest.mark.parametrize("settings", [DEFAULTS, CHANGED], ids=["defaults", "changed"])
def test_exported_rules_pass_promtool_check_and_unit_tests(settings: Settings,
                                                           tmp_path: Path) -> None:
    rules_file, tests_file = export(settings, tmp_path)
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules.RULES)} rules found" in checked.stdout
    tested = promtool("test", "rules", str(tests_file), cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_fire_and_resolve_every_alert() -> None:
    assert promtests.COVERED == rules.RULE_NAMES
    doc = prometheus.tests_document(DEFAULTS, "rules.yml")
    checks = {(c["alertname"], t["name"]): ["fires" if c["exp_alerts"] else "quiet"
                                            for c in t["alert_rule_test"]]
              for t in doc["tests"] for c in t["alert_rule_test"]}
    for rule in rules.RULES.values():
        alert = prometheus.alert_name(rule)
        seen = checks[(alert, f"{rule.name} fires over its threshold and resolves")]
        # not before its sustain time is over, then firing, then resolved
        assert seen == (["quiet"] if rule.sustain else []) + ["fires", "quiet"], rule.name
        if rule.upper:  # a warning band is quiet once its alert takes over
            assert checks[(alert, f"{rule.name} is quiet above {rule.upper}")] == ["quiet"]


def test_a_threshold_changed_in_the_settings_changes_both_evaluators() -> None:
    """The one table: the built-in monitor and the exported rules move together."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    sample = {"taken_at": t0, "primary": "node1", "pool_utilization_pct": 75.0,
              "pool": {"busiest": "cardmint/1", "busy": 15, "pool_max": 20},
              "nodes": {"node1": {"reachable": True, "role": "primary", "connections": 45},
                        "node2": {"reachable": True, "role": "replica", "lag_s": 20.0}}}

    def fired(settings: Settings) -> set[str]:
        return {f.name for f in rules.evaluate([sample], t0, settings, max_gap_s=150)}

    assert fired(DEFAULTS) == {"replica_lag_warn"}
    assert fired(CHANGED) == {"pool_utilization", "replica_lag", "connections"}

    def exported(settings: Settings) -> dict[str, dict[str, object]]:
        doc = prometheus.rules_document(settings)
        return {r["labels"]["rule"]: r for r in doc["groups"][0]["rules"]}

    before, after = exported(DEFAULTS), exported(CHANGED)
    assert before["pool_utilization"]["expr"].endswith("> 90")
    assert after["pool_utilization"]["expr"].endswith("> 70")
    assert after["pool_utilization_warn"]["expr"].endswith("> 60 <= 70")
    assert after["replica_lag"]["expr"].endswith("> 12")
    assert after["connections"]["expr"].endswith("> 40")
    assert "> 120" in after["latency_p95"]["expr"]
    assert (before["cpu_sustained"]["for"], after["cpu_sustained"]["for"]) == ("15m", "3m")
    assert "> 50" in after["cpu_sustained"]["expr"]


def test_the_rules_carry_the_runbooks_thresholds_severities_and_links() -> None:
    doc = prometheus.rules_document(DEFAULTS)
    exported = {r["labels"]["rule"]: r for r in doc["groups"][0]["rules"]}
    assert set(exported) == rules.RULE_NAMES
    expected = {  # rule: (threshold in the expression, for)
        "cpu_sustained": ("> 75", "15m"), "memory_sustained": ("> 85", "10m"),
        "latency_p95_sustained": ("> 100", "5m"), "latency_p95": ("> 150", None),
        "pool_utilization_warn": ("> 80 <= 90", None), "pool_utilization": ("> 90", None),
        "replica_lag_warn": ("> 10 <= 30", None), "replica_lag": ("> 30", None),
        "storage_warn": ("> 70 <= 85", None), "storage": ("> 85", None),
        "connections": ("> 100", None), "read_write_ratio": ("> 5)", None)}
    for name, (threshold, sustain) in expected.items():
        assert threshold in exported[name]["expr"], name
        assert exported[name].get("for") == sustain, name
    runbook = anchors((ROOT / "docs" / "runbook.md").read_text())
    for name, r in exported.items():
        rule = rules.RULES[name]
        assert r["labels"]["severity"] == rule.severity in ("P0", "P1", "P2")
        url = r["annotations"]["runbook_url"]
        assert url == link(rule.runbook_section) and url.startswith("docs/runbook.md#")
        assert url.split("#")[1] in runbook, f"{name}: no heading {url} in docs/runbook.md"
    assert {r.severity for r in rules.RULES.values()} == {"P0", "P1", "P2"}
    readme = (ROOT / "README.md").read_text()
    assert [n for n in rules.RULE_NAMES if f"`{n}`" not in readme] == []


def test_the_files_in_the_repository_are_the_generated_ones() -> None:
    """monitoring/ holds the export for the default settings: regenerate, not edit."""
    again = ("regenerate with the default settings (no CARDMINT_* variables, no .env): "
             "cd monitoring/prometheus && cardmint monitor export-rules --out "
             "cardmint-rules.yml --tests cardmint-rules.test.yml && cardmint monitor "
             "export-dashboard --out ../grafana/cardmint-dashboard.json")
    prom = MONITORING / "prometheus"
    assert (prom / "cardmint-rules.yml").read_text() == prometheus.to_yaml(
        prometheus.rules_document(DEFAULTS)), again
    assert (prom / "cardmint-rules.test.yml").read_text() == prometheus.to_yaml(
        prometheus.tests_document(DEFAULTS, "cardmint-rules.yml"),
        prometheus.TESTS_HEADER), again
    board = json.loads((MONITORING / "grafana" / "cardmint-dashboard.json").read_text())
    assert board == grafana.dashboard(DEFAULTS), again


@needs_promtool
def test_the_example_prometheus_config_loads_the_rules() -> None:
    done = promtool("check", "config", "prometheus.yml", cwd=MONITORING / "prometheus")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules.RULES)} rules found" in done.stdout


# -- expressions name only what /metrics exposes --------------------------------------------

_NOT_METRICS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "sum", "min", "max", "avg", "count", "stddev", "topk",
    "bottomk", "quantile", "rate", "irate", "increase", "delta", "deriv", "time", "vector",
    "scalar", "abs", "absent", "clamp_min", "clamp_max", "histogram_quantile", "label_replace",
    "max_over_time", "min_over_time", "avg_over_time", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  text)
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:e[+-]?\d+)?", " ", text)  # numbers
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)) - _NOT_METRICS


def test_metric_names_are_read_off_promql() -> None:
    assert metric_names('max by (node) (rate(a_total{x="y"}[5m]) / b) > 1.5e3 and on () '
                        'count(c == 0)') == {"a_total", "b", "c"}


async def test_every_dashboard_and_rule_expression_names_exposed_metrics(
        exposition: str) -> None:
    exposed = exposed_names(exposition)
    board = grafana.dashboard(DEFAULTS)
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [r.promql(DEFAULTS) for r in rules.RULES.values()]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - exposed == set()
    assert len(used) > 25


@needs_promtool
def test_the_dashboards_expressions_parse(tmp_path: Path) -> None:
    """promtool parses every panel's PromQL (as recording rules: it has no other way)."""
    exprs = [t["expr"] for p in grafana.dashboard(DEFAULTS)["panels"]
             for t in p.get("targets", [])]
    records = [{"record": f"cardmint:panel_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "board.yml").write_text(yaml.safe_dump(
        {"groups": [{"name": "board", "rules": records}]}))
    done = promtool("check", "rules", str(tmp_path / "board.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_the_dashboard_has_the_ops_pages_panels_and_the_settings_thresholds() -> None:
    board = grafana.dashboard(CHANGED)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for section in ("nodes", "replica lag", "query latency", "pool utilization",
                    "storage", "connections", "alerts firing", "incidents", "backup",
                    "drills", "maintenance", "wal archive", "transactions per second",
                    "rows read per row written", "intake queue", "cpu", "memory"):
        assert section in titles, section
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"] and all(t["expr"] for t in p["targets"])
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    steps = {p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"][
        "steps"]][1:] for p in panels}
    assert steps["Pool utilization"] == [60.0, 70.0]
    assert steps["Replica lag"] == [CHANGED.replica_lag_warn_s, 12.0]
    assert steps["Connections"] == [40.0]
    assert steps["CPU"] == [50.0]


# -- the command ----------------------------------------------------------------------------


def cardmint(*args: str, env: dict[str, str] | None = None,
             cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                          text=True, env={**base, "CARDMINT_HOME": "/nonexistent",
                                          **(env or {})}, timeout=120, cwd=cwd)


def test_export_commands_write_the_files_with_the_settings(tmp_path: Path) -> None:
    out, tests = tmp_path / "r" / "cardmint-rules.yml", tmp_path / "t" / "rules.test.yml"
    out.parent.mkdir()
    tests.parent.mkdir()
    done = cardmint("monitor", "export-rules", "--out", str(out), "--tests", str(tests),
                    "--runbook-url", "https://git.example/cardmint/docs/runbook.md",
                    env={"CARDMINT_REPLICA_LAG_CRITICAL_S": "45"})
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load(out.read_text())
    lag = next(r for r in doc["groups"][0]["rules"] if r["labels"]["rule"] == "replica_lag")
    assert lag["expr"].endswith("> 45")
    assert lag["annotations"]["runbook_url"] == (
        "https://git.example/cardmint/docs/runbook.md#critical-metrics")
    assert yaml.safe_load(tests.read_text())["rule_files"] == ["../r/cardmint-rules.yml"]
    board = cardmint("monitor", "export-dashboard")
    assert board.returncode == 0 and json.loads(board.stdout)["uid"] == grafana.UID
    lonely = cardmint("monitor", "export-rules", "--tests", str(tests))
    assert lonely.returncode == 3 and "--tests needs --out" in lonely.stderr
    assert "Traceback" not in lonely.stderr
    nowhere = cardmint("monitor", "export-rules", "--out", str(tmp_path / "no" / "x.yml"))
    assert nowhere.returncode == 3 and "cannot write" in nowhere.stderr


@needs_promtool
def test_the_exported_files_are_checked_as_written(tmp_path: Path) -> None:
    done = cardmint("monitor", "export-rules", "--out", "rules.yml", "--tests", "t.yml",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert promtool("test", "rules", "t.yml", cwd=tmp_path).returncode == 0


def test_an_exposition_helper_reads_samples() -> None:
    text = '# TYPE a histogram\na_bucket{le="1"} 2.0\nb 3\n'
    assert samples(text, "b") == {"": 3.0}
    assert exposed_names(text) == {"a", "a_bucket", "a_count", "a_sum"}
