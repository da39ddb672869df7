"""The operations dashboard: its snapshot against real clusters (a stopped replica, no
primary, seeded monitor samples, alerts, incidents, backups and drills), its charts, and
its pages behind the admin scope."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cardmint.cluster.pg import process
from cardmint.config import secret
from cardmint.db import Database, migrate
from cardmint.ops.incidents.lifecycle import open_incident
from cardmint.ops.monitor.alerts import plain
from cardmint.ops.monitor.dashboard import judge_node, snapshot
from cardmint.ops.monitor.history import with_gaps
from cardmint.ops.monitor.sample import store_sample
from cardmint.web.charts import line_chart, nice_max
from support import TestCluster, make_settings, poll, start_cluster

SVG = "{http://www.w3.org/2000/svg}"
# a Sunday at 03:00 UTC: inside the runbook's weekly window, and far from any real sample
NOW = datetime(2031, 1, 5, 3, 0, tzinfo=UTC)


def node(snap: dict, name: str) -> dict:
    return next(n for n in snap["cluster"]["nodes"] if n["name"] == name)


def check(snap: dict, name: str, node_name: str | None = None) -> dict:
    return next(c for c in snap["health"]["checks"]
                if c["name"] == name and (node_name is None or c["node"] == node_name))


# -- the snapshot on the session's cluster ------------------------------------------------


async def test_a_healthy_cluster(pg: TestCluster, db: Database) -> None:
    snap = await snapshot(pg.settings(), db)
    unavailable = {k: v["error"] for k, v in snap.items()
                   if isinstance(v, dict) and v.get("available") is False}
    assert unavailable == {}
    assert snap["cluster"]["provider"] == "local"
    primary, replica = node(snap, "node1"), node(snap, "node2")
    assert primary["role"] == "primary" and replica["role"] == "replica"
    assert primary["timeline"] >= 1 and replica["lag_s"] is not None
    assert replica["status"] == "ok", replica["reasons"]
    names = {c["name"] for c in snap["health"]["checks"]}
    assert {"connectivity", "role", "replica_lag", "latency_p95", "pool_utilization"} <= names
    for c in snap["health"]["checks"]:
        assert c["status"] in ("ok", "warn", "critical")
    assert check(snap, "latency_p95")["warn"] == pg.settings().latency_p95_warn_ms
    assert snap["maintenance"]["in_window"] in (True, False)
    assert snap["status"] in ("ok", "warn")  # backup_age warns on a cluster never backed up
    json.dumps(plain(snap))  # the snapshot serialises as it is


@pytest.fixture
async def seeded(db: Database):
    """Monitor samples over the hour before NOW (a gap in the middle), an alert, an
    overdue P0 incident, a backup and a drill; all removed afterwards."""
    sample_ids = []
    for minutes in (55, 54, 53, 3, 2, 1):  # 50 minutes without samples
        figures = {"app": {"latency": {"p50_ms": 2.0, "p95_ms": 40.0 + minutes,
                                       "p99_ms": 90.0}},
                   "latency_p95_ms": 40.0 + minutes, "primary": "node1",
                   "pool_utilization_pct": None if minutes == 2 else 25.0}
        sample_ids.append(await store_sample(
            db, {"taken_at": NOW - timedelta(minutes=minutes), **figures}))
    await store_sample(db, {"taken_at": NOW - timedelta(hours=2), "latency_p95_ms": 999.0})
    await store_sample(db, {"taken_at": NOW + timedelta(minutes=1), "latency_p95_ms": 999.0})
    alert_id = await db.fetchval(
        "INSERT INTO alerts (name, node, severity, status, message, value, threshold, "
        "started_at, last_seen_at) VALUES ('dash_test_rule', 'node9', 'P1', 'firing', "
        "'p95 above 100 ms for 5 min', 180, 100, $1, $1) RETURNING id",
        NOW - timedelta(minutes=7))
    incident = await open_incident(db, "P0", "dashboard test outage",
                                   now=NOW - timedelta(minutes=20), actor="pytest")
    await db.execute("INSERT INTO backups (id, status, started_at, finished_at, size_bytes, "
                     "error) VALUES ('dash-test-1', 'failed', $1, $1, 0, "
                     "'connect to postgresql://cardmint_owner:hunter2@127.0.0.1/x failed')",
                     NOW - timedelta(hours=3))
    drill_id = await db.fetchval(
        "INSERT INTO drills (kind, started_at, finished_at, ok, report) VALUES "
        "('failover', $1, $2, true, $3) RETURNING id",
        NOW - timedelta(days=1), NOW - timedelta(days=1) + timedelta(seconds=9),
        {"write_outage_s": 0.412, "detection_s": 0.05, "promotion_s": 0.2, "lost_writes": 0,
         "old_primary": "node1", "new_primary": "node2"})
    yield {"incident": incident.id, "alert": alert_id, "drill": drill_id}
    await db.execute("DELETE FROM alerts WHERE id = $1", alert_id)
    await db.execute("DELETE FROM incidents WHERE id = $1", incident.id)
    await db.execute("DELETE FROM backups WHERE id = 'dash-test-1'")
    await db.execute("DELETE FROM drills WHERE id = $1", drill_id)
    await db.execute("DELETE FROM monitor_samples WHERE taken_at > $1",
                     NOW - timedelta(hours=3))


async def test_seeded_samples_alerts_incidents_backups_drills(
        pg: TestCluster, db: Database, seeded: dict) -> None:
    s = pg.settings(monitor_interval_s=60)
    snap = await snapshot(s, db, now=NOW)
    series = snap["series"]
    assert series["available"] and series["samples"] == 6  # the 2 h old and future ones not
    p95 = series["latency_ms"]["p95"]
    # a None breaks the line where the monitor did not run (> 2.5 intervals apart)
    values = [v for _, v in p95]
    assert values == [95.0, 94.0, 93.0, None, 43.0, 42.0, 41.0]
    assert all(NOW - timedelta(hours=1) < t <= NOW for t, _ in p95)
    assert [v for _, v in series["latency_ms"]["p50"] if v is not None] == [2.0] * 6
    # a sample with a primary but no busy application process: an idle pool, 0 %
    assert [v for _, v in series["pool_pct"]["pool utilization"] if v is not None] == \
        [25.0, 25.0, 25.0, 25.0, 0.0, 25.0]
    assert series["last_sample_at"] == NOW - timedelta(minutes=1)

    alert = next(a for a in snap["alerts"]["items"] if a["id"] == seeded["alert"])
    assert alert["severity"] == "P1" and alert["status"] == "firing"
    incident = next(i for i in snap["incidents"]["items"] if i["id"] == seeded["incident"])
    assert incident["severity"] == "P0"
    assert incident["deadline_at"] == NOW - timedelta(minutes=5)  # opened + 15 min
    assert incident["overdue"] is True
    backup = next(b for b in snap["backups"]["items"] if b["id"] == "dash-test-1")
    assert backup["status"] == "failed" and backup["restorable"] is False
    assert "hunter2" not in backup["error"] and "***" in backup["error"]
    drill = next(d for d in snap["drills"]["items"] if d["id"] == seeded["drill"])
    assert drill["write_outage_s"] == pytest.approx(0.412) and drill["lost_writes"] == 0
    assert snap["maintenance"]["in_window"] is True
    assert snap["maintenance"]["window"]["kind"] == "weekly"
    assert "hunter2" not in json.dumps(plain(snap))


async def test_an_empty_hour_has_empty_series(pg: TestCluster, db: Database) -> None:
    snap = await snapshot(pg.settings(), db, now=NOW + timedelta(days=30))
    assert snap["series"]["samples"] == 0
    assert snap["series"]["latency_ms"]["p95"] == []
    assert snap["maintenance"]["in_window"] is False


async def test_a_naive_clock_is_refused(pg: TestCluster, db: Database) -> None:
    from cardmint.errors import ValidationError

    with pytest.raises(ValidationError):
        await snapshot(pg.settings(), db, now=datetime(2031, 1, 5, 3, 0))


def test_all_clear_counts_a_failed_drill() -> None:
    from cardmint.ops.monitor.dashboard import overall

    snap = {"cluster": {"nodes": [{"status": "ok"}]}, "health": {"available": True,
                                                                   "status": "ok"},
            "drills": {"available": True, "items": [{"ok": True}]}}
    assert overall(snap) == "ok"
    snap["drills"]["items"].insert(0, {"ok": False})
    assert overall(snap) == "warn"  # not "all clear" while the last drill failed


def test_node_verdicts() -> None:
    s = make_settings(Path("/nonexistent"))
    up = {"name": "node2", "role": "replica", "running": True, "state": "streaming",
          "lag_s": 0.2}
    assert judge_node(up, [], s) == ("ok", [])
    assert judge_node({**up, "lag_s": 12.0}, [], s)[0] == "warn"
    assert judge_node({**up, "lag_s": 31.0}, [], s)[0] == "critical"
    assert judge_node({**up, "state": "recovering"}, [], s)[0] == "warn"
    assert judge_node({**up, "patroni": {"running": False}}, [], s) == (
        "warn", ["its Patroni agent is not running"])
    status, reasons = judge_node({**up, "running": False, "state": "stopped"}, [], s)
    assert status == "critical" and reasons == [
        "not running (to fix: `cardmint cluster rejoin node2`)"]
    failing = [{"name": "storage", "node": "node2", "status": "warn"},
               {"name": "storage", "node": "node1", "status": "critical"}]
    assert judge_node(up, failing, s) == ("warn", ["storage warn"])


# -- a cluster of this test's own: a replica stops, then the primary --------------------


@pytest.mark.slow
async def test_a_stopped_replica_then_no_primary(work_root: Path, template_dir: Path) -> None:
    from cardmint.api.app import create_app
    from support import replicas_caught_up, serving

    tc = await start_cluster(work_root, template_dir, "dashboard")
    db = None
    try:
        await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))
        s = tc.settings()
        db = Database(s)
        await db.open(monitor=False)
        assert node(await snapshot(s, db), "node2")["status"] == "ok"
        headers = await _cookie(db, "admin")
        await replicas_caught_up(tc)  # the token is on the replica too
        async with serving(create_app(s)) as client:
            await _replica_down_then_no_primary(tc, s, db, client, headers)
    finally:
        if db is not None:
            await db.close()
        await tc.cluster.down(purge=True)


async def _replica_down_then_no_primary(tc: TestCluster, s, db: Database, client,
                                        headers: dict[str, str]) -> None:
    state = tc.cluster.state()
    await process.stop(state.replicas[0].pid)
    snap = await snapshot(s, db)
    replica = node(snap, "node2")
    assert replica["status"] == "critical" and replica["running"] is False
    assert replica["reasons"][0].startswith("not running")
    assert check(snap, "connectivity", "node2")["status"] != "ok"
    assert node(snap, "node1")["status"] in ("ok", "warn")
    assert snap["status"] == "critical"
    assert snap["alerts"]["available"]  # the primary still answers
    page = await client.get("/dashboard", headers=headers)
    assert page.status_code == 200
    assert re.search(r'data-node="node2" data-status="critical"', page.text)
    await _one_verdict_everywhere(tc)

    await tc.cluster.up()  # starts the stopped node, by its data directory
    await poll(lambda: _node_status(s, db, "node2", "ok"), timeout=30)

    await process.stop(tc.cluster.state().primary.pid)
    snap = await snapshot(s, db)
    assert node(snap, "node1")["status"] == "critical"
    assert check(snap, "role")["status"] == "critical"
    for name in ("series", "alerts", "incidents", "backups", "drills"):
        assert snap[name]["available"] is False, name
        assert snap[name]["error"]
    assert snap["maintenance"]["available"] and snap["status"] == "critical"
    assert tc.password("cardmint_app") not in json.dumps(plain(snap))

    # the page still opens (a replica vouches for the admin token) and, once the snapshot
    # viewers share is renewed, shows the primary down
    async def page_without_primary():
        response = await client.get("/dashboard", headers=headers)
        return response if response.status_code == 200 and re.search(
            r'data-node="node1" data-status="critical"', response.text) else None

    page = await poll(page_without_primary, timeout=30, interval=0.25)
    assert re.search(r'data-node="node2" data-status="(ok|warn)"', page.text)
    assert page.text.count("unavailable: ") >= 5
    for role, password in tc.cluster.passwords().items():
        assert password not in page.text, role
    fragment = await client.get("/dashboard/fragment", headers=headers)
    assert fragment.status_code == 200 and "unavailable: " in fragment.text


async def _one_verdict_everywhere(tc: TestCluster) -> None:
    """Issue 17 item 12: a stopped replica was warn in `health` (exit 1), P1 in the alerts
    (exit 2), red on the dashboard, and ok in the role check. Now it is P1, critical,
    exit 2 in each, and each names the command that fixes it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(tc.home)

    def cardmint(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cardmint", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    health = await asyncio.to_thread(cardmint, "health", "--json")
    doc = json.loads(health.stdout)
    assert health.returncode == 2 and doc["severity"] == "P1", health.stdout
    by = {(c["name"], c["node"]): c for c in doc["checks"]}
    assert by[("connectivity", "node2")]["status"] == "critical"
    assert by[("role", None)]["status"] == "critical"
    for name in ("connectivity", "role"):
        node_name = "node2" if name == "connectivity" else None
        assert "`cardmint cluster rejoin node2`" in by[(name, node_name)]["detail"]
    monitor = await asyncio.to_thread(cardmint, "monitor", "--once", "--no-backups", "--json")
    assert monitor.returncode == 2, monitor.stdout + monitor.stderr
    firing = {a["name"]: a for a in json.loads(monitor.stdout)["firing"]}
    assert firing["node_unreachable"]["severity"] == "P1"
    assert "`cardmint cluster rejoin node2`" in firing["node_unreachable"]["recommendation"]


async def _node_status(s, db: Database, name: str, expected: str) -> bool:
    return node(await snapshot(s, db), name)["status"] == expected


# -- charts --------------------------------------------------------------------------------


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything but well-formed XML


def _points(root: ET.Element) -> list[tuple[float, float]]:
    out = []
    for line in root.iter(f"{SVG}polyline"):
        for pair in line.get("points", "").split():
            x, y = pair.split(",")
            out.append((float(x), float(y)))
    out += [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")]
    return out


def test_chart_is_valid_svg_with_points_in_range() -> None:
    start = NOW - timedelta(hours=1)
    series = {"p50": [(start + timedelta(minutes=m), 1.0 + m % 3) for m in range(0, 61, 5)],
              "p95": [(start + timedelta(minutes=m), 20.0 + m) for m in range(0, 61, 5)],
              "p99": [(NOW - timedelta(minutes=2), 140.0)]}
    svg = line_chart(series, unit="ms", threshold=100, threshold_label="p95 target 100 ms",
                     title="Latency", width=400, height=150, start=start, end=NOW)
    root = _parse(str(svg))
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Latency"
    desc = root.find(f"{SVG}desc").text
    assert "p95: latest 80 ms" in desc and "threshold 100 ms" in desc
    points = _points(root)
    assert len(points) == 13 + 13 + 1  # the lone p99 sample is a dot
    assert all(0 <= x <= 400 and 0 <= y <= 150 for x, y in points)
    assert root.get("aria-labelledby").split() == [root.find(f"{SVG}title").get("id"),
                                                   root.find(f"{SVG}desc").get("id")]
    # the threshold: a dashed line across the plot with its label
    group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "threshold")
    line = group.find(f"{SVG}line")
    assert line.get("y1") == line.get("y2") and line.get("stroke-dasharray")
    assert group.find(f"{SVG}text").text == "p95 target 100 ms"
    # the same chart renders the same (ids stable across refreshes)
    assert str(svg) == str(line_chart(series, unit="ms", threshold=100,
                                      threshold_label="p95 target 100 ms", title="Latency",
                                      width=400, height=150, start=start, end=NOW))


def test_chart_scales_to_include_the_threshold_and_higher_values() -> None:
    start = NOW - timedelta(hours=1)
    low = line_chart({"pool": [(start, 10.0), (NOW, 20.0)]}, unit="%", threshold=80,
                     start=start, end=NOW)
    root = _parse(str(low))
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "100 %" in labels  # the axis reaches past the threshold
    high = line_chart({"pool": [(start, 10.0), (NOW, 240.0)]}, unit="%", threshold=80)
    assert all(0 <= y <= 160 for _, y in _points(_parse(str(high))))
    assert nice_max(0.7) == 1 and nice_max(101) == 200 and nice_max(240) == 250


def test_chart_gaps_break_the_line() -> None:
    t = [NOW - timedelta(minutes=m) for m in (30, 29, 28, 5, 4)]
    series = {"p95": [(t[0], 1.0), (t[1], 2.0), (t[2], None), (t[3], 3.0), (t[4], 4.0)]}
    root = _parse(str(line_chart(series, unit="ms")))
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    assert with_gaps([(t[0], 1.0), (t[1], 2.0), (t[3], 3.0)], 150) == [
        (t[0], 1.0), (t[1], 2.0), (t[1] + timedelta(seconds=150), None), (t[3], 3.0)]


def test_empty_chart_says_no_data() -> None:
    for series in ({}, {"p95": []}, {"p95": [(NOW, None)]}):
        root = _parse(str(line_chart(series, unit="ms", title="Latency", threshold=100)))
        assert root.find(f"{SVG}desc").text == "No data for this period."
        assert not _points(root)
        assert [t.text for t in root.iter(f"{SVG}text")] == ["no data"]


def test_chart_escapes_names_and_refuses_a_tiny_canvas() -> None:
    svg = str(line_chart({"<script>": [(NOW, 1.0), (NOW + timedelta(1), 2.0)]}, unit="ms",
                         title="a & b"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    _parse(svg)
    with pytest.raises(ValueError):
        line_chart({}, unit="ms", width=10, height=10)


# -- the pages ------------------------------------------------------------------------------


@pytest.fixture
async def client(pg: TestCluster):
    from cardmint.api.app import create_app
    from support import serving

    async with serving(create_app(pg.settings())) as c:
        yield c


async def _cookie(db: Database, scope: str) -> dict[str, str]:
    from cardmint.tokens import create_token
    from cardmint.web.session import COOKIE

    token, _ = await create_token(db, owner=f"dashboard-test-{scope}", scope=scope)
    return {"Cookie": f"{COOKIE}={token}", "Accept": "text/html"}


async def test_the_dashboard_needs_an_admin_token(client, db: Database) -> None:
    anonymous = await client.get("/dashboard")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/signin?next=%2Fdashboard")
    for scope in ("read", "write"):
        refused = await client.get("/dashboard", headers=await _cookie(db, scope))
        assert refused.status_code == 303 and refused.headers["location"].endswith("needs=admin")
        # the script's request gets a status it can act on, not a sign-in page
        fragment = await client.get("/dashboard/fragment", headers=await _cookie(db, scope))
        assert fragment.status_code == 403
    assert (await client.get("/dashboard/fragment",
                             headers={"Accept": "text/html"})).status_code == 401


async def test_an_admin_sees_the_dashboard(pg: TestCluster, client, db: Database) -> None:
    headers = await _cookie(db, "admin")
    page = await client.get("/dashboard", headers=headers)
    assert page.status_code == 200, page.text
    html = page.text
    for needle in ('data-node="node1"', 'data-node="node2"', 'data-check="replica_lag"',
                   "Operations dashboard", '<script src="/static/dashboard.js"',
                   'id="chart-latency-t"', "Maintenance window", "Open incidents"):
        assert needle in html, needle
    assert "<script>" not in html and 'style="' not in html  # the CSP allows neither
    assert "Content-Security-Policy" in page.headers
    for role, password in pg.cluster.passwords().items():
        assert password not in html, role

    fragment = await client.get("/dashboard/fragment", headers=headers)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'data-node="node2"' in fragment.text
    static = await client.get("/static/dashboard.js")
    assert static.status_code == 200 and "fetch(" in static.text


async def test_bad_refresh_is_a_400_and_pages_stay_out_of_the_schema(client,
                                                                     db: Database) -> None:
    headers = await _cookie(db, "admin")
    for bad in ("1", "abc", "100000"):
        response = await client.get(f"/dashboard?refresh={bad}", headers=headers)
        assert response.status_code == 400, bad
    assert (await client.get("/dashboard?refresh=10", headers=headers)).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/dashboard")]


def test_a_threshold_far_above_the_data_is_named_not_drawn() -> None:
    start = NOW - timedelta(hours=1)
    svg = line_chart({"p95": [(start, 1.5), (NOW, 2.5)]}, unit="ms", threshold=100,
                     threshold_label="p95 target 100 ms", start=start, end=NOW)
    root = _parse(str(svg))
    group = next(g for g in root.iter(f"{SVG}g") if "threshold" in g.get("class", ""))
    assert group.find(f"{SVG}line") is None
    assert "p95 target 100 ms: above this scale" in group.find(f"{SVG}text").text
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "5 ms" in labels  # the scale fits the data, not the target
    assert "threshold 100 ms" in root.find(f"{SVG}desc").text
