"""Server logs: jsonlog files per node, `cluster logs` filtered by level and time, and the
errors of the last hour in `stats`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.pg import logs
from cardmint.errors import UsageError
from cardmint.ops.health.stats import server_errors
from support import TestCluster, poll, start_cluster

pytestmark = pytest.mark.slow
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_parse_since() -> None:
    assert logs.parse_since("5m", NOW) == NOW - timedelta(minutes=5)
    assert logs.parse_since("1h", NOW) == NOW - timedelta(hours=1)
    assert logs.parse_since("2026-01-02T03:00:00", NOW) == datetime(2026, 1, 2, 3, tzinfo=UTC)
    with pytest.raises(UsageError):
        logs.parse_since("yesterday", NOW)


def test_filter_by_level_and_time() -> None:
    error = {"timestamp": "2026-01-02 03:04:00.500 UTC", "error_severity": "ERROR"}
    info = {"timestamp": "2026-01-02 03:04:01.000 UTC", "error_severity": "LOG"}
    assert logs.Filter(errors=True)(error) and not logs.Filter(errors=True)(info)
    assert logs.Filter(since=NOW - timedelta(minutes=1))(error)
    assert not logs.Filter(since=NOW - timedelta(seconds=4))(error)


def _cli(tc: TestCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cardmint.cli.main", "cluster", "logs",
                           *args, "--home", str(tc.home), "--json"],
                          capture_output=True, text=True, timeout=60)


async def test_errors_found_by_level_and_time(work_root: Path, template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "logs", replicas=1)
    try:
        table = f"no_such_table_{uuid.uuid4().hex[:8]}"
        conn = await tc.admin()
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch(f"SELECT * FROM {table}")
        finally:
            await conn.close()
        after = datetime.now(UTC) + timedelta(seconds=1)  # the log's clock has ms
        state = tc.cluster.state()

        def ours() -> list[dict]:
            found = logs.entries(state, keep=logs.Filter(errors=True))
            return [e for e in found if table in e.get("message", "")]

        [entry] = await poll(ours)  # the collector writes in its own time
        assert entry["node"] == state.primary.name and entry["state_code"] == "42P01"

        done = await asyncio.to_thread(_cli, tc, "--errors", "--since", "5m")
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)["entries"]
        assert any(table in e["message"] for e in found)
        assert all(e["error_severity"] in ("ERROR", "FATAL", "PANIC") for e in found)

        done = await asyncio.to_thread(_cli, tc, "--errors", "--since", after.isoformat())
        assert done.returncode == 0, done.stderr
        assert not any(table in e["message"] for e in json.loads(done.stdout)["entries"])

        done = await asyncio.to_thread(_cli, tc, state.replicas[0].name)
        assert all(e["node"] == state.replicas[0].name for e in
                   json.loads(done.stdout)["entries"])

        summary = server_errors(tc.settings())
        assert summary is not None and summary["by_sqlstate"].get("42P01", 0) >= 1

        passwords = [p for p in tc.cluster.passwords().values() if p]
        for node in state.nodes:
            files = logs.log_files(node)
            assert files, node.name
            assert not any(p in f.read_text() for f in files for p in passwords)
    finally:
        await tc.cluster.down(purge=True)


def test_an_expected_outage_logs_one_line_and_serve_logs_requests() -> None:
    """Issue 17 item 15: a lost connection is one line with its cause, not a traceback;
    any other error keeps its traceback; `cardmint serve` has an access log."""
    import io
    import logging as logging_

    import asyncpg
    from uvicorn.config import LOGGING_CONFIG

    from cardmint.db.outage_log import OutageFilter, serve_log_config

    stream = io.StringIO()
    handler = logging_.StreamHandler(stream)
    handler.addFilter(OutageFilter())
    logger = logging_.getLogger("cardmint.test-outage")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for exc in (asyncpg.CannotConnectNowError("the database system is shutting down"),
                    ValueError("a bug")):
            try:
                raise exc
            except Exception:
                logger.exception("round failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "round failed (CannotConnectNowError: the database system is shutting down)" in out
    assert out.count("Traceback") == 1 and "ValueError: a bug" in out  # the bug keeps it
    config = serve_log_config(LOGGING_CONFIG)
    assert all("outage" in h["filters"] for h in config["handlers"].values())
    assert all(config["loggers"][n]["handlers"] == ["default"]
               for n in ("cardmint", "asyncio", "asyncpg"))
    assert "filters" not in LOGGING_CONFIG["handlers"]["default"]  # uvicorn's left alone


async def test_a_background_job_failing_at_shutdown_does_not_fail_the_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    """After a failover the monitor's lock connection is gone and releasing it raised
    out of the lifespan: Ctrl-C printed "Application shutdown failed"."""

    import asyncpg
    from fastapi import FastAPI

    from cardmint.api.background import run_beside

    async def job(app: FastAPI, stop: asyncio.Event) -> None:
        await stop.wait()
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    app = FastAPI()
    run_beside(app, job)
    with caplog.at_level("WARNING", logger="cardmint.background"):
        async with app.router.lifespan_context(app):
            pass
    assert "ended with an error at shutdown: ConnectionDoesNotExistError" in caplog.text
