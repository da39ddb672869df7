"""The load tests, run for a second or two against the session cluster: their reports'
shape, requests made, no errors, application tables untouched. Never their speed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter

import pytest

from cardmint.catalog.load import load_catalog
from cardmint.config import secret
from cardmint.db.connect import connection
from cardmint.errors import ConfigError, UsageError
from cardmint.ops.loadtest import mix, wrk
from cardmint.ops.loadtest.app import AppOptions, choose_generator, run_app_loadtest
from cardmint.ops.loadtest.pgbench import (
    DATABASE,
    parse_summary,
    quantiles_ms,
    without_password,
)
from support import TestCluster

PGBENCH_OUT = """\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
number of transactions actually processed: 35630
number of failed transactions: 0 (0.000%)
latency average = 0.222 ms
initial connection time = 32.147 ms
tps = 18031.330892 (without initial connection time)
"""

WRK_OUT = """\
Running 5s test @ http://127.0.0.1:8000/v1/cards/base1-4
  Latency Distribution
     50%   23.36ms
     75%   32.33ms
     90%   50.02ms
     99%  160.52ms
  4417 requests in 6.03s, 9.71MB read
  Non-2xx or 3xx responses: 3
Requests/sec:    732.88
"""


def test_pgbench_summary_and_exact_percentiles() -> None:
    summary = parse_summary(PGBENCH_OUT)
    assert summary["tps"] == pytest.approx(18031.33, abs=0.01)
    assert summary["transactions"] == 35630 and summary["failed"] == 0
    assert summary["latency_avg_ms"] == 0.222 and summary["latency_stddev_ms"] is None
    q = quantiles_ms(Counter({100: 90, 2000: 5, 9000: 5}))
    assert (q["p50"], q["p95"], q["p99"], q["max"]) == (0.1, 2.0, 9.0, 9.0)
    assert quantiles_ms(Counter())["p95"] is None


def test_pgbench_never_sees_a_password_in_argv() -> None:
    dsn = "postgresql://postgres:s3cret@127.0.0.1:5432,127.0.0.1:5433/x?sslmode=disable"
    assert "s3cret" not in without_password(dsn)
    assert without_password(dsn).startswith("postgresql://postgres@127.0.0.1:5432,")


def test_wrk_output_and_mix_parsing() -> None:
    parsed = wrk.parse(WRK_OUT)
    assert parsed["rps"] == 732.88 and parsed["requests"] == 4417 and parsed["errors"] == 3
    assert parsed["p50_ms"] == 23.36 and parsed["p99_ms"] == 160.52
    assert mix.parse_mix("search=2, lookup=1,identify=0") == {"search": 2, "lookup": 1}
    with pytest.raises(UsageError):
        mix.parse_mix("search=1,teleport=2")
    with pytest.raises(UsageError):
        AppOptions(url="http://10.0.0.1:8000").check()  # loopback only
    with pytest.raises(UsageError):
        AppOptions(generator="ab").check()


def test_the_mix_falls_back_to_httpx_without_wrk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrk, "available", lambda: None)
    name, why = choose_generator(None)
    assert name == "httpx" and why is not None and "wrk is not installed" in why
    assert choose_generator("httpx") == ("httpx", None)
    with pytest.raises(ConfigError):
        choose_generator("wrk")  # asked for by name: no silent substitute
    monkeypatch.setattr(wrk, "available", lambda: "/usr/bin/wrk")
    assert choose_generator(None) == ("wrk", None)


async def _cardmint(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cardmint", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode()


async def test_loadtest_pgbench_on_its_own_database(pg: TestCluster) -> None:
    args = ("loadtest", "pgbench", "--home", str(pg.home), "--json", "-c", "2", "-j", "1",
            "--scale", "1")
    code, out = await _cardmint(*args, "-T", "2")
    report = json.loads(out)
    assert code == {"ok": 0, "warn": 1, "critical": 2}[report["status"]]
    assert report["database"] == DATABASE and report["scale"] == 1
    assert report["transactions"] > 0 and report["failed"] == 0
    assert report["logged_transactions"] == report["transactions"]
    lat = report["latency_ms"]
    assert lat["p50"] is not None and lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["sla"]["p95_warn_ms"] == pg.settings().latency_p95_warn_ms
    # the second run re-uses the dataset
    code, out = await _cardmint(*args, "-T", "1")
    assert json.loads(out)["initialised"] is False
    admin = await pg.admin()
    try:  # nothing of pgbench's in the application's database
        assert await admin.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pgbench%'") == 0
    finally:
        await admin.close()


async def test_loadtest_app_drives_a_real_server(pg: TestCluster) -> None:
    settings = pg.settings()
    async with connection(secret(settings.migration_url), settings) as conn:
        await load_catalog(conn, sample=True)
    # reads only: captures would leave work for other tests' queue (the writes:
    # test_loadtest_writes.py). httpx: the generator with per-operation figures.
    opts = AppOptions(duration_s=2, concurrency=2, warmup_s=0.5,
                      mix="search=4,lookup=3,identify=2", compare_wrk=False, generator="httpx")
    report = await run_app_loadtest(settings, opts)
    assert report["server"]["started"] and report["server"]["pid"] != os.getpid()
    assert report["generator"]["pid"] == os.getpid()
    assert report["generator"]["name"] == "httpx" and report["generator"]["why"] is None
    assert set(report["operations"]) == {"search", "lookup", "identify"}
    for name, op in report["operations"].items():
        assert op["requests"] > 0, name
        assert op["errors"] == 0, (name, op["error_kinds"])
        assert op["p50_ms"] <= op["p95_ms"] <= op["p99_ms"] <= op["max_ms"]
    total = report["total"]
    assert total["requests"] == sum(op["requests"] for op in report["operations"].values())
    assert total["error_rate_pct"] == 0
    assert report["status"] in ("ok", "critical") and report["ok"] == (report["status"] == "ok")
    assert report["sla"] == {"p95_ms": settings.latency_p95_warn_ms, "error_rate_pct": 0.1}
