"""What a Prometheus scrape of `/metrics` costs, against the size of the intake history.

    .venv/bin/python -m bench.metrics [--jobs 0,1000000] [--runs 20] [--json]

A primary and a streaming replica under /tmp, migrated, the sample catalog; the app
served in-process. At each size the processing_jobs table holds that many finished jobs
(1 % failed, 0.1 % still queued, each with its capture), and `GET /metrics` is timed
`--runs` times: every scrape asks both nodes (a connection each, with the monitoring
role) and reads the operations tables through the data layer. The cluster is stopped by
PID and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import time
from typing import Any

import httpx
import uvloop

from bench.scale import load, settings, workdir
from cardmint.api.app import create_app
from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.config import secret
from cardmint.db import migrate
from cardmint.db.connect import connection

JOBS_SQL = """
WITH c AS (
    INSERT INTO captures (image_ref) SELECT 'bench/' || g FROM generate_series($1::int + 1, $2) g
    RETURNING id)
INSERT INTO processing_jobs (capture_id, kind, status, attempts, finished_at)
SELECT id, 'identify',
       CASE WHEN id % 1000 = 1 THEN 'queued' WHEN id % 100 = 0 THEN 'failed'
            ELSE 'succeeded' END,
       1, CASE WHEN id % 1000 = 1 THEN NULL ELSE now() END
FROM c
"""


async def scrapes(client: httpx.AsyncClient, runs: int) -> dict[str, Any]:
    took, inside = [], []
    for _ in range(runs):
        began = time.perf_counter()
        response = await client.get("/metrics")
        took.append(time.perf_counter() - began)
        assert response.status_code == 200
        m = re.search(r"^cardmint_scrape_duration_seconds (\S+)$", response.text, re.M)
        inside.append(float(m.group(1)) if m else float("nan"))
    return {"median_ms": round(statistics.median(took) * 1000, 1),
            "best_ms": round(min(took) * 1000, 1),
            "reading_median_ms": round(statistics.median(inside) * 1000, 1),
            "bytes": len(response.content),
            "series": sum(1 for line in response.text.splitlines() if line[:1] not in "#")}


async def main(sizes: list[int], runs: int) -> dict[str, Any]:
    root = workdir()
    home = root / "home"
    result: dict[str, Any] = {"benchmark": "metrics", "runs": runs, "sizes": []}
    cluster = LocalCluster(settings(home))
    try:
        await cluster.up(replicas=1)
        s = settings(home)
        await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
        async with connection(secret(s.migration_url) or "", s) as conn:
            await load_catalog(conn, sample=True)
        have = 0
        for size in sizes:
            async with connection(secret(s.migration_url) or "", s) as conn:
                if size > have:
                    await conn.execute(JOBS_SQL, have, size, timeout=3600)
                    await conn.execute("VACUUM ANALYZE processing_jobs", timeout=3600)
                have = max(have, size)
                began = time.perf_counter()
                await conn.fetch("SELECT kind, status, count(*) FROM processing_jobs "
                                 "GROUP BY kind, status")
                count_ms = (time.perf_counter() - began) * 1000
            app = create_app(s)
            async with app.router.lifespan_context(app):
                for _ in range(200):  # the app opens its data layer in the background
                    if app.state.db.is_open:
                        break
                    await asyncio.sleep(0.05)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://b") as c:
                    await c.get("/metrics")  # warm the pools
                    figures = await scrapes(c, runs)
            result["sizes"].append({"jobs": size, "jobs_count_ms": round(count_ms, 1),
                                    **figures, "load_1m": load()})
    finally:
        await cluster.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="0,1000000")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = uvloop.run(main([int(x) for x in args.jobs.split(",")], args.runs))
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for row in out["sizes"]:
            print(f"{row['jobs']:>9,} jobs: GET /metrics median {row['median_ms']} ms "
                  f"(best {row['best_ms']}), reading {row['reading_median_ms']} ms, "
                  f"jobs count {row['jobs_count_ms']} ms, {row['series']} series, "
                  f"{row['bytes']:,} bytes, load {row['load_1m']}")
