"""PgBouncer in front of the primary: how many server connections 500 clients need, and
what the extra hop costs in latency against direct connections.

    .venv/bin/python -m bench.pooler [--clients 500] [--seconds 10] [--json]

One cluster (a primary alone) under a fresh directory in /tmp, `cardmint pooler up` in front
of it. Three runs:

1. latency: 20 connections, each a loop of parameterised point queries (`SELECT $1::int`)
   for --seconds: direct with asyncpg's statement cache, direct without it, and through
   PgBouncer (without it, as the data layer does there);
2. many clients: --clients connections through PgBouncer at once, each running queries for
   --seconds, while the primary's server connections of the application role are sampled;
3. the same number of clients directly, to show what the pooler saves (max_connections 200).

Everything is stopped by PID and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.cluster.local import pooler
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.state import APP, SUPERUSER, with_topology
from cardmint.config import Settings, secret
from cardmint.db.latency import LatencyHistogram


def settings(home: Path) -> Settings:
    return with_topology(Settings(_env_file=None, home=home))  # type: ignore[call-arg]


class Arrivals:
    """Clients connected (or refused) so far; the run starts when all have arrived."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.connected = total, 0, 0
        self.all_in = asyncio.Event()

    def add(self, ok: bool) -> None:
        self.count += 1
        self.connected += ok
        if self.count == self.total:
            self.all_in.set()


async def loop(dsn: str, password: str, seconds: float, hist: LatencyHistogram,
               errors: list[str], cache: bool, start: asyncio.Event,
               arrived: Arrivals) -> int:
    """One client: connect, wait for the start, query until the time is up."""
    try:
        conn = await asyncpg.connect(dsn, password=password, timeout=30,
                                     statement_cache_size=100 if cache else 0)
    except Exception as exc:  # counted: the direct run meets max_connections
        errors.append(f"connect: {type(exc).__name__}")
        arrived.add(False)
        return 0
    arrived.add(True)
    done = 0
    try:
        await start.wait()
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                await conn.fetchval("SELECT $1::int", i)
            except Exception as exc:
                errors.append(type(exc).__name__)
                break
            hist.record(time.perf_counter() - began)
            done += 1
            i += 1
    finally:
        await conn.close()
    return done


async def run(dsn: str, password: str, clients: int, seconds: float, cache: bool,
              admin: asyncpg.Connection | None = None) -> dict[str, Any]:
    hist, errors = LatencyHistogram(), []
    start = asyncio.Event()
    arrived = Arrivals(clients)
    tasks = [asyncio.create_task(loop(dsn, password, seconds, hist, errors, cache, start,
                                      arrived)) for _ in range(clients)]
    await arrived.all_in.wait()  # every client connected (or refused) before the start
    peak = 0
    start.set()
    began = time.perf_counter()
    while not all(t.done() for t in tasks):
        if admin is not None:
            peak = max(peak, await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", APP))
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - began
    queries = sum(t.result() for t in tasks)
    snap = hist.snapshot()
    return {"clients": clients, "connected": arrived.connected, "queries": queries,
            "qps": round(queries / elapsed), "errors": len(errors),
            "error_kinds": sorted(set(errors)), "p50_ms": snap["p50_ms"],
            "p95_ms": snap["p95_ms"], "p99_ms": snap["p99_ms"],
            "peak_server_connections": peak if admin is not None else None}


async def main(clients: int, seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-pooler-", dir="/tmp"))
    os.chmod(root, 0o755)  # the server OS user must reach it
    home = root / "home"
    cluster = LocalCluster(settings(home))
    try:
        await cluster.up(replicas=0)
        up = await pooler.up(cluster)
        s = settings(home)
        state = cluster.state()
        assert state is not None
        direct = state.dsn(APP, [state.primary])
        pooled = secret(s.database_url) or ""
        password = cluster.passwords()[APP]
        primary = state.primary
        admin = await asyncpg.connect(host=primary.host, port=primary.port, user=SUPERUSER,
                                      password=cluster.passwords()[SUPERUSER],
                                      database=state.database)
        try:
            latency = {
                "direct_cache": await run(direct, password, 20, seconds, True),
                "direct_nocache": await run(direct, password, 20, seconds, False),
                "pooler": await run(pooled, password, 20, seconds, False),
            }
            many = await run(pooled, password, clients, seconds, False, admin)
            many_direct = await run(direct, password, clients, min(seconds, 3), True, admin)
            status = await pooler.status(cluster)
        finally:
            await admin.close()
    finally:
        await pooler.down(cluster) if (home / "cluster.json").exists() else None
        await cluster.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
    return {"pgbouncer": {k: up[k] for k in ("pool_mode", "max_db_connections")},
            "latency_20_clients": latency, "many_clients_pooler": many,
            "many_clients_direct": many_direct,
            "pooler_stats": status.get("stats"), "cpus": os.cpu_count(),
            "ok": many["errors"] == 0 and many["peak_server_connections"] < 30}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main(args.clients, args.seconds))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print("latency, 20 clients, SELECT $1::int:")
        for name, r in out["latency_20_clients"].items():
            print(f"  {name:15} {r['qps']:>7} q/s  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms"
                  f"  p99 {r['p99_ms']} ms  errors {r['errors']}")
        for name in ("many_clients_pooler", "many_clients_direct"):
            r = out[name]
            print(f"{name}: {r['connected']} of {r['clients']} clients in, "
                  f"{r['queries']} queries, {r['qps']} q/s, "
                  f"p95 {r['p95_ms']} ms, errors {r['errors']} {r['error_kinds']}, primary "
                  f"server connections peak {r['peak_server_connections']}")
        print(f"ok (no errors, < 30 server connections through the pooler): {out['ok']}")
    sys.exit(0 if out["ok"] else 1)
