"""`storage`: usage, largest relations, dead tuples and bloat, WAL and archive; `storage
vacuum`, whose FULL form waits for a maintenance window unless forced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardmint.errors import UsageError
from cardmint.ops import maintenance
from cardmint.ops.storage import usage
from support import TestCluster, make_settings, poll

ROOT = Path(__file__).resolve().parent.parent
MONDAY_NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SUNDAY_0230 = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)  # the weekly window


def test_bloat_and_level_rules() -> None:
    table = {"live_tuples": 300, "dead_tuples": 100, "heap_bytes": 8192 * 4}
    assert usage.bloat(table) == {"dead_pct": 25.0, "bloat_bytes_estimate": 8192}
    assert usage.bloat({"live_tuples": 0, "dead_tuples": 0, "heap_bytes": 0})["dead_pct"] == 0
    s = make_settings(Path("/nonexistent"))
    assert [usage.level(p, s) for p in (None, 10.0, 70.0, 85.0)] == [
        "ok", "ok", "warn", "critical"]


@pytest.fixture
async def bloated(pg: TestCluster):
    """A table with 1,000 rows of which 600 are deleted (dead until vacuumed)."""
    conn = await pg.admin()
    try:
        await conn.execute("CREATE TABLE storage_probe (id int PRIMARY KEY, pad text)")
        await conn.execute("INSERT INTO storage_probe SELECT g, repeat('x', 200) "
                           "FROM generate_series(1, 1000) g")
        await conn.execute("DELETE FROM storage_probe WHERE id <= 600")
        await conn.execute("SELECT pg_stat_force_next_flush()")
        yield conn
    finally:
        await conn.execute("DROP TABLE IF EXISTS storage_probe")
        await conn.close()


def probe(report: dict) -> dict | None:
    return next((t for t in report["dead_tuples"] if t["name"] == "storage_probe"), None)


async def test_report_shows_usage_relations_dead_tuples_and_archive(pg: TestCluster,
                                                                   bloated) -> None:
    report = await usage.report(pg.settings())
    disk = report["usage"]
    assert 0 < disk["used_pct"] < 100 and disk["database_bytes"] > 0
    assert report["status"] == usage.level(disk["used_pct"], pg.settings())
    assert report["wal_bytes"] > 0 and report["archive"]["bytes"] > 0
    assert report["largest_tables"] and report["largest_indexes"]
    assert report["largest_tables"][0]["total_bytes"] >= report["largest_tables"][-1][
        "total_bytes"]
    row = probe(report)
    assert row is not None and row["dead_tuples"] == 600 and row["live_tuples"] == 400
    assert row["dead_pct"] == 60.0 and row["bloat_bytes_estimate"] > 0
    json.dumps(report, default=str)


async def test_vacuum_and_the_full_vacuum_window(pg: TestCluster, bloated) -> None:
    done = await usage.vacuum(pg.settings(), tables=["storage_probe"])
    assert done["statement"] == "VACUUM (ANALYZE)" and done["tables"] == ["storage_probe"]

    # (whether the dead rows can go yet is the replica's feedback's call, not vacuum's)
    assert await poll(lambda: bloated.fetchval(
        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1",
        "storage_probe"))

    with pytest.raises(UsageError, match="maintenance window"):
        await usage.vacuum(pg.settings(), full=True, tables=["storage_probe"],
                             now=MONDAY_NOON)
    forced = await usage.vacuum(pg.settings(), full=True, force=True,
                                  tables=["storage_probe"], now=MONDAY_NOON)
    assert forced["statement"] == "VACUUM (FULL, ANALYZE)"
    inside = await usage.vacuum(pg.settings(), full=True, tables=["storage_probe"],
                                  now=SUNDAY_0230)
    assert inside["ok"]
    with pytest.raises(UsageError, match="no table"):
        await usage.vacuum(pg.settings(), tables=["no_such_table"])


def test_storage_command_line(pg: TestCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)

    def cardmint(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                              text=True, env=env, timeout=60, cwd=ROOT)

    done = cardmint("storage", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == {"ok": 0, "warn": 1, "critical": 2}[report["status"]]
    done = cardmint("storage", "vacuum", "--full", "--table", "incidents", "--json")
    in_window = maintenance.current_window(datetime.now(UTC)) is not None
    assert done.returncode == (0 if in_window else 3), done.stderr
