"""`cardmint monitor` on the real cluster: alerts raised and cleared by real faults, fired
once, recorded, logged and POSTed to a local webhook; the CLI's JSON and exit codes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cardmint.clock import utc
from cardmint.config import Settings, secret
from cardmint.db import Database
from cardmint.ops.facts import HostSampler
from cardmint.ops.monitor import sample
from cardmint.ops.monitor.loop import run_loop
from support import TestCluster, poll
from test_cli import ROOT, cardmint, no_traceback

TABLES = ("alerts", "monitor_samples", "incidents")


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, name: str) -> list[str]:
        return [p["event"] for p in self.received if p["alert"]["name"] == name]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
async def fresh_rows(pg: TestCluster) -> AsyncIterator[None]:
    """Delete every alert, sample and incident the test created (ids above the marks)."""
    admin = await pg.admin()
    try:
        marks = {t: await admin.fetchval(f"SELECT coalesce(max(id), 0) FROM {t}")
                 for t in TABLES}
        yield
        for table in TABLES:
            await admin.execute(f"DELETE FROM {table} WHERE id > $1", marks[table])
    finally:
        await admin.close()


def replica_name(pg: TestCluster) -> str:
    return pg.cluster.state().replicas[0].name


def only_replica(pg: TestCluster, **overrides: Any) -> Settings:
    """Settings whose monitor sees the replica alone: no node answers as the primary."""
    replica = pg.cluster.state().replicas[0]
    url = next(u for u in pg.settings().monitor_urls
               if f"@{replica.host}:{replica.port}/" in secret(u))
    return pg.settings(monitor_urls=[secret(url)], **overrides)


async def alert_rows(db: Database, name: str, after_id: int = 0) -> list[dict[str, Any]]:
    return [a for a in await sample.list_alerts(db, include_resolved=True)
            if a["name"] == name and a["id"] > after_id]


async def test_replica_lag_fires_once_and_clears_when_replay_resumes(
        pg: TestCluster, db: Database, receiver: Receiver, fresh_rows: None,
        caplog: pytest.LogCaptureFixture) -> None:
    s = pg.settings(replica_lag_warn_s=0.1, replica_lag_critical_s=0.2)
    node = replica_name(pg)
    host = HostSampler()

    async def round_() -> sample.MonitorReport:
        return await sample.run_once(s, webhook=receiver.url, host=host)

    async def quiet() -> bool:
        # Lag is "now minus the last replayed commit" while received WAL awaits replay,
        # so at a 0.2 s threshold a round can catch a record in flight: wait for a calm one.
        report = await sample.run_once(s, host=host)
        return report.stored and "replica_lag" not in {a["name"] for a in report.firing}

    await poll(quiet, timeout=20, interval=0.1)
    mark = await db.fetchval("SELECT coalesce(max(id), 0) FROM alerts")
    replica, primary = await pg.admin("replica"), await pg.admin()
    caplog.set_level(logging.INFO, logger="cardmint.alerts")
    try:
        await replica.execute("SELECT pg_wal_replay_pause()")
        await poll(lambda: replica.fetchval("SELECT pg_get_wal_replay_pause_state() = 'paused'"))
        await primary.execute("SELECT txid_current()")  # a commit the replica cannot replay
        await poll(lambda: replica.fetchval(
            "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()"))

        async def fired() -> sample.MonitorReport | None:
            report = await round_()
            return report if any(a["name"] == "replica_lag" for a in report.fired) else None

        first = await poll(fired, timeout=20, interval=0.1)
        alert = next(a for a in first.fired if a["name"] == "replica_lag")
        assert alert["node"] == node and alert["severity"] == "P1"
        assert alert["value"] > 0.2 and alert["threshold"] == 0.2
        assert alert["runbook_section"] and alert["recommendation"]
        assert first.exit_code == 2

        again = await round_()
        assert [a for a in again.fired if a["name"] == "replica_lag"] == []
        still = next(a for a in again.firing if a["name"] == "replica_lag")
        assert still["id"] == alert["id"] and still["last_seen_at"] > alert["last_seen_at"]
        assert [a["status"] for a in await alert_rows(db, "replica_lag", mark)] == ["firing"]
        assert receiver.events("replica_lag") == ["firing"]
        assert "FIRING P1 replica_lag on " + node in caplog.text
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        await replica.close()
        await primary.close()

    async def resolved() -> sample.MonitorReport | None:
        report = await round_()
        return report if any(a["name"] == "replica_lag" for a in report.resolved) else None

    cleared = await poll(resolved, timeout=20, interval=0.1)
    assert "replica_lag" not in {a["name"] for a in cleared.firing}
    rows = await alert_rows(db, "replica_lag", mark)
    assert len(rows) == 1 and rows[0]["status"] == "resolved" and rows[0]["resolved_at"]
    await poll(lambda: receiver.events("replica_lag") == ["firing", "resolved"])
    posted = [p for p in receiver.received if p["alert"]["name"] == "replica_lag"]
    assert posted[1]["alert"]["id"] == alert["id"] and posted[1]["stored"] is True
    assert "RESOLVED P1 replica_lag" in caplog.text


async def test_no_primary_is_p0_opens_an_incident_and_a_dead_webhook_is_only_logged(
        pg: TestCluster, db: Database, fresh_rows: None,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cardmint.alerts")
    dead = "http://127.0.0.1:9/hook?token=abc123"  # nothing listens on the discard port
    report = await sample.run_once(only_replica(pg), webhook=dead)
    alert = next(a for a in report.fired if a["name"] == "no_primary")
    assert alert["severity"] == "P0" and alert["node"] is None and report.exit_code == 2
    assert "Database Connection Failures" in alert["runbook_section"]
    assert len(report.incidents) == 1
    incident = await db.fetchrow("SELECT severity, status, title FROM incidents WHERE id = $1",
                                 report.incidents[0])
    assert incident["severity"] == "P0" and "no_primary" in incident["title"]
    row = (await alert_rows(db, "no_primary"))[0]
    assert row["incident_id"] == report.incidents[0]
    assert "alert webhook to 127.0.0.1 failed" in caplog.text and "abc123" not in caplog.text

    back = await sample.run_once(pg.settings())
    assert [a["name"] for a in back.resolved] == ["no_primary"] and back.incidents == []


async def test_alerts_announced_while_the_database_is_unreachable_are_recorded_later(
        pg: TestCluster, db: Database, receiver: Receiver, fresh_rows: None) -> None:
    password = "s3cret-pw-7"
    cut = pg.settings(database_url=f"postgresql://cardmint_app:{password}@127.0.0.1:9/cardmint")
    memory = sample.AlertMemory()
    t0 = utc()
    down = await sample.run_once(cut, webhook=receiver.url, memory=memory, now=t0)
    assert down.stored is False and down.exit_code == 2
    assert [a["name"] for a in down.fired] == ["database_unreachable"]
    assert password not in json.dumps(down.to_dict())
    again = await sample.run_once(cut, webhook=receiver.url, memory=memory,
                                   now=t0 + timedelta(seconds=1))
    assert again.fired == [] and receiver.events("database_unreachable") == ["firing"]
    assert receiver.received[0]["stored"] is False

    back = await sample.run_once(pg.settings(), webhook=receiver.url, memory=memory,
                                  now=t0 + timedelta(seconds=2))
    assert back.stored and [a["name"] for a in back.resolved] == ["database_unreachable"]
    rows = await alert_rows(db, "database_unreachable")
    assert len(rows) == 1 and rows[0]["status"] == "resolved"
    assert rows[0]["started_at"] == t0 and rows[0]["resolved_at"] == t0 + timedelta(seconds=2)
    assert len(back.incidents) == 1 and memory.pending == {}
    assert receiver.events("database_unreachable") == ["firing", "resolved"]


async def test_a_sustained_rule_fires_only_once_the_stored_window_covers_it(
        pg: TestCluster, db: Database, fresh_rows: None) -> None:
    s = pg.settings(scale_latency_p95_ms=0.0, scale_latency_for_min=2.0)
    host = HostSampler()
    t0 = utc() + timedelta(hours=1)  # after every sample already stored
    names = []
    for minute in range(3):
        report = await sample.run_once(s, now=t0 + timedelta(minutes=minute), host=host)
        names.append({a["name"] for a in report.firing})
    assert "latency_p95_sustained" not in names[0] | names[1]
    assert "latency_p95_sustained" in names[2]
    window = await sample.load_window(db, since=t0 - timedelta(seconds=1),
                                       until=t0 + timedelta(minutes=2))
    assert [w["taken_at"] for w in window] == [t0 + timedelta(minutes=m) for m in range(3)]
    assert all(w["latency_p95_ms"] > 0 and w["primary"] for w in window)
    # a gap of more than 2.5 intervals starts the count again
    late = await sample.run_once(s, now=t0 + timedelta(minutes=6), host=host)
    assert "latency_p95_sustained" not in {a["name"] for a in late.firing}
    assert [a["name"] for a in late.resolved] == ["latency_p95_sustained"]


async def test_samples_carry_the_figures_and_old_ones_are_pruned(
        pg: TestCluster, db: Database, fresh_rows: None) -> None:
    now = utc()
    old = await sample.store_sample(db, {"taken_at": now - timedelta(hours=25), "nodes": {}})
    report = await sample.run_once(pg.settings(), now=now)
    assert report.pruned >= 1
    assert await db.fetchval("SELECT count(*) FROM monitor_samples WHERE id = $1", old) == 0
    taken = report.sample
    nodes = taken["nodes"]
    assert sorted(f["role"] for f in nodes.values()) == ["primary", "replica"]
    assert taken["primary"] in nodes and all(f["reachable"] for f in nodes.values())
    assert all(f["connections"] >= 1 and f["storage_pct"] is not None for f in nodes.values())
    assert taken["latency_p95_ms"] > 0 and taken["app"]["latency"]["count"] == 20
    assert taken["host"]["memory_pct"] is not None and taken["activity"]["xact_commit"] > 0
    following = await sample.run_once(pg.settings(), now=now + timedelta(seconds=1))
    assert following.sample["rates"]["tps"] > 0
    mix = following.sample["read_write"]  # the monitor's own tables are left out
    assert mix is not None and mix["reads"] >= 0 and mix["writes"] == 0
    assert following.sample["host"]["cpu_times"] and following.sample["host"]["cpu_pct"] >= 0


def test_monitor_once_json_and_alerts(pg: TestCluster, fresh_rows: None) -> None:
    done = cardmint(pg, "monitor", "--once", "--json")
    no_traceback(done)
    report = json.loads(done.stdout)
    assert done.returncode == {None: 0, "P2": 1, "P1": 2, "P0": 2}[report["severity"]]
    assert report["stored"] is True and report["sample"]["primary"]
    assert {"firing", "fired", "resolved", "taken_at", "errors"} <= set(report)
    listed = cardmint(pg, "alerts", "--json")
    assert listed.returncode == done.returncode, listed.stderr
    assert {a["name"] for a in json.loads(listed.stdout)["alerts"]} == \
        {a["name"] for a in report["firing"]}
    people = cardmint(pg, "alerts", "--all")
    assert people.returncode == done.returncode and "alert" in people.stdout
    assert cardmint(pg, "monitor", "--interval", "0").returncode == 3


def test_monitor_loop_runs_rounds_until_interrupted(pg: TestCluster, fresh_rows: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)
    # A suite started in the background by a shell without job control runs with SIGINT
    # ignored, and a child inherits that: the monitor would never see the interrupt.
    # Handled here while it starts, the child starts with the default instead.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cardmint", "monitor", "--interval",
                                 "0.2", "--no-backups", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        rounds = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert all(r["stored"] for r in rounds) and rounds[1]["sample"]["rates"] is not None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_a_cluster_monitor_and_alerts_exit_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(tmp_path / "none"), COLUMNS="200")
    for args in (("monitor", "--once", "--json"), ("alerts",)):
        done = subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)
        assert done.returncode == 3, done
        assert "cluster up" in done.stderr
        no_traceback(done)


# -- one monitor loop samples, cluster-wide; `cardmint serve` runs one ---------------------


async def test_only_one_loop_samples_and_the_other_takes_over(pg: TestCluster,
                                                                fresh_rows: None) -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    s = pg.settings()
    a = asyncio.create_task(run_loop(s, interval_s=0.1, on_round=first.append,
                                     stop=stop_first))
    try:
        await poll(lambda: any(r.get("stored") for r in first), timeout=30)
        b = asyncio.create_task(run_loop(s, interval_s=0.1, on_round=second.append,
                                         stop=stop_second))
        try:
            await poll(lambda: len(second) >= 3, timeout=30)
            assert all(r == {"leader": False} for r in second)  # it never sampled
            stop_first.set()
            await a
            await poll(lambda: any(r.get("stored") for r in second), timeout=30)
        finally:
            stop_second.set()
            await b
    finally:
        stop_first.set()
        await asyncio.gather(a, return_exceptions=True)


async def test_serve_runs_the_monitor_loop(pg: TestCluster, fresh_rows: None) -> None:
    from cardmint.api.app import create_app
    from cardmint.api.background import run_monitor_in
    from support import serving

    db = Database(pg.settings(), replica_dsns=[])
    await db.open(monitor=False)
    try:
        before = await db.fetchval("SELECT coalesce(max(id), 0) FROM monitor_samples")
        app = create_app(pg.settings())
        run_monitor_in(app, interval_s=0.1, backups=False)
        async with serving(app):
            await poll(lambda: db.fetchval("SELECT count(*) >= 2 FROM monitor_samples "
                                           "WHERE id > $1", before), timeout=30)
    finally:
        await db.close()


async def test_the_alerts_table_reads_at_80_columns(pg: TestCluster, fresh_rows: None) -> None:
    """Issue 17 item 16: the alerts table wrapped inside words at 80 columns."""
    from cardmint.ops.monitor.rules import RULES

    rule = RULES["node_unreachable"]
    admin = await pg.admin()
    try:
        await admin.execute(
            "INSERT INTO alerts (name, severity, message, node, runbook_section, "
            "recommendation, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, now())",
            rule.name, rule.severity, "node7 does not answer", "node7", rule.runbook_section,
            rule.advice("node7"))
    finally:
        await admin.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(pg.home), COLUMNS="80")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "alerts"], capture_output=True,
        text=True, env=env, timeout=120, cwd=ROOT)
    no_traceback(done)
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, done.stdout
    words = set(done.stdout.replace("│", " ").split())
    for word in ("node_unreachable", "`cardmint", "rejoin", "availability", "Connection"):
        assert word in words, (word, done.stdout)  # whole, never cut across lines
