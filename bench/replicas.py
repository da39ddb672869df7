"""Read throughput with one and with two replicas, measured in one run.

    .venv/bin/python -m bench.replicas [--seconds 10] [--tasks 20] [--rounds 3] [--json]

A fresh cluster under /tmp (primary + 1 replica), migrated, the sample catalog loaded. Reads
are `stale_ok` point reads of catalog cards by id through CardMint's `Database` (20 tasks,
uvloop, one process), so they go to the replicas. First with the one replica; then
`cardmint cluster add-replica` adds a second, and rounds alternate one replica / two
replicas / none (the primary alone, for reference) so that drifting machine load hits all.
Which node served the reads is counted from each node's pg_stat_database. Everything is
stopped by PID and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.state import SUPERUSER, with_topology
from cardmint.config import Settings, secret
from cardmint.db import Database, migrate
from cardmint.db.connect import connection
from cardmint.ops.loadtest import loadgen

READ = "SELECT id, name, set_id FROM cards WHERE id = $1"


def settings(home: Path, **kw: Any) -> Settings:
    return with_topology(Settings(_env_file=None, home=home, **kw))  # type: ignore[call-arg]


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def commits(cluster: LocalCluster) -> dict[str, int]:
    """Transactions committed so far in the application database, per node."""
    state = cluster.state()
    assert state is not None
    out = {}
    for node in state.nodes:
        conn = await asyncpg.connect(host=node.host, port=node.port, user=SUPERUSER,
                                     password=cluster.passwords()[SUPERUSER],
                                     database="postgres")
        try:
            out[f"{node.name} ({node.role})"] = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", state.database)
        finally:
            await conn.close()
    return out


async def reads(s: Settings, replica_dsns: list[str], ids: list[str], tasks: int,
                seconds: float, cluster: LocalCluster) -> dict[str, Any]:
    db = await Database(s, replica_dsns=replica_dsns).open(monitor=False)
    latencies: list[float] = []
    try:
        for _ in range(tasks):  # warm every pool connection before the clock starts
            await db.fetchrow(READ, ids[0], stale_ok=True)
        before = await commits(cluster)
        deadline = time.perf_counter() + seconds

        async def loop(rng: random.Random) -> None:
            while (start := time.perf_counter()) < deadline:
                await db.fetchrow(READ, rng.choice(ids), stale_ok=True)
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(loop(random.Random(i)) for i in range(tasks)))
        elapsed = time.perf_counter() - began
        after = await commits(cluster)
    finally:
        await db.close()
    latencies.sort()
    return {"replicas": len(replica_dsns), "qps": round(len(latencies) / elapsed, 1),
            "p50_ms": loadgen.quantile_ms(latencies, 0.5),
            "p95_ms": loadgen.quantile_ms(latencies, 0.95),
            "served": {k: after[k] - before.get(k, 0) for k in after}, "load": load()}


async def main(seconds: int, tasks: int, rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-replicas-", dir="/tmp"))
    os.chmod(root, 0o755)
    home = root / "home"
    cluster = LocalCluster(settings(home))
    runs: list[dict[str, Any]] = []
    began_load = load()
    try:
        await cluster.up(replicas=1)
        s = settings(home, pool_min=tasks, pool_max=tasks, replica_pool_max=tasks)
        await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
        async with connection(secret(s.migration_url) or "", s) as conn:
            await load_catalog(conn)
            await conn.execute("ANALYZE")
        s = settings(home, pool_min=tasks, pool_max=tasks, replica_pool_max=tasks)
        first = [u.get_secret_value() for u in s.replica_urls]
        db = await Database(s, replica_dsns=[]).open(monitor=False)
        try:
            ids = [r["id"] for r in await db.fetch("SELECT id FROM cards")]
        finally:
            await db.close()
        runs.append({"phase": "before add-replica",
                     **await reads(s, first, ids, tasks, seconds, cluster)})
        began = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "add-replica",
                             "--home", str(home), "--json"],
            capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"add-replica failed: {done.stderr[-2000:]}")
        add_s = round(time.monotonic() - began, 2)
        s = settings(home, pool_min=tasks, pool_max=tasks, replica_pool_max=tasks)
        both = [u.get_secret_value() for u in s.replica_urls]
        assert len(both) == 2
        for i in range(rounds):
            for dsns in (first, both, []):
                runs.append({"phase": f"round {i + 1}",
                             **await reads(s, dsns, ids, tasks, seconds, cluster)})
    finally:
        await cluster.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
    summary = {}  # medians of the alternated rounds: drifting load hits every setting alike
    for n in (0, 1, 2):
        qps = [r["qps"] for r in runs if r["replicas"] == n and r["phase"] != "before add-replica"]
        summary[n] = statistics.median(qps) if qps else None
    return {"benchmark": "replicas", "seconds": seconds, "tasks": tasks, "cpus": os.cpu_count(),
            "cards": len(ids), "load_at_start": began_load, "load_at_end": load(),
            "add_replica_s": add_s, "runs": runs, "median_qps_by_replicas": summary}


def render(out: dict[str, Any]) -> None:
    print(f"{out['cards']} cards, {out['tasks']} tasks, {out['seconds']} s per run, "
          f"{out['cpus']} cores; load {out['load_at_start']} at start, "
          f"{out['load_at_end']} at end; add-replica took {out['add_replica_s']} s")
    for r in out["runs"]:
        served = ", ".join(f"{k} {v}" for k, v in r["served"].items())
        print(f"  {r['phase']:<19} {r['replicas']} replica(s): {r['qps']:>8,.0f} q/s  "
              f"p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  load {r['load']}  [{served}]")
    print(f"median q/s by replicas (rounds): {json.dumps(out['median_qps_by_replicas'])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(main(args.seconds, args.tasks, args.rounds))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        render(result)
    sys.exit(0)
