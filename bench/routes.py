"""The API's hot catalog routes timed in process: the app's whole request path (routing,
dependencies, the query, rendering, serialisation) without a server or a socket to it.

    .venv/bin/python -m bench.routes [--requests 2000] [--rounds 3] [--home DIR] [--json]

Requests go one at a time through httpx's ASGITransport to `create_app()` with its
lifespan running: `GET /v1/cards/{id}` over 200 card ids drawn with a fixed seed, and
`GET /v1/cards?q=...` (pageSize 50) cycling through a few queries. Each is timed twice:
with the query (the route as served) and with the query's result cached in the bench's
process (the catalog functions answered from a dict filled on the first call), which
leaves the app's own cost: routing, dependencies, rendering and serialisation. `cpu` is
this process's CPU time per request (client and app, not PostgreSQL's): other load on the
machine disturbs it far less than the wall-clock mean and p95. Without --home it starts a
primary under /tmp with the full catalog and deletes it at the end; with --home it reuses
(and keeps) that cluster, so two versions of the code compare on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.scale import settings, workdir
from cardmint.api.app import create_app
from cardmint.catalog import search
from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.config import secret
from cardmint.db import migrate
from cardmint.db.connect import connection

QUERIES = ("charizard", "set:base1", "name:pika* hp:[60 TO *]", "type:water rarity:rare",
           "illustrator:sugimori", "-type:fire stage:stage2")
WARMUP = 200
PHASES = {"lookup": "GET /v1/cards/{id}", "search": "GET /v1/cards?q=",
          "lookup_cached": "GET /v1/cards/{id}, result cached",
          "search_cached": "GET /v1/cards?q=, result cached"}


async def prepare(home: Path) -> None:
    await LocalCluster(settings(home)).up(replicas=0)
    s = settings(home)
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    async with connection(secret(s.migration_url) or "", s) as conn:
        await load_catalog(conn)


async def timed(client: httpx.AsyncClient, paths: list[str], n: int) -> dict[str, Any]:
    for i in range(WARMUP):
        (await client.get(paths[i % len(paths)])).raise_for_status()
    took = []
    cpu = time.process_time()
    for i in range(n):
        began = time.perf_counter()
        response = await client.get(paths[i % len(paths)])
        took.append(time.perf_counter() - began)
        response.raise_for_status()
    cpu = time.process_time() - cpu
    took.sort()
    return {"cpu_ms": round(cpu / n * 1000, 3),
            "mean_ms": round(statistics.fmean(took) * 1000, 3),
            "p50_ms": round(took[len(took) // 2] * 1000, 3),
            "p95_ms": round(took[int(len(took) * 0.95)] * 1000, 3)}


class Cached:
    """Answer `cardmint.catalog.search`'s two card reads from memory while entered."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        for name in ("get_card", "search_cards"):
            real = self.saved[name] = getattr(search, name)
            setattr(search, name, self.remember(real))

    def __exit__(self, *_: object) -> None:
        for name, real in self.saved.items():
            setattr(search, name, real)

    @staticmethod
    def remember(real: Any) -> Any:
        seen: dict[str, Any] = {}

        async def answer(db: Any, *args: Any, **kw: Any) -> Any:
            key = repr((args, sorted(kw.items())))
            if key not in seen:
                seen[key] = await real(db, *args, **kw)
            return seen[key]

        return answer


async def measure(home: Path, requests: int, rounds: int) -> dict[str, Any]:
    app = create_app(settings(home))
    async with app.router.lifespan_context(app):
        db = app.state.db
        deadline = time.monotonic() + 30
        while not db.is_open:
            if time.monotonic() > deadline:
                raise RuntimeError("the app's database did not open within 30 s")
            await asyncio.sleep(0.05)
        ids = [r["id"] for r in await db.fetch("SELECT id FROM cards ORDER BY id")]
        lookups = [f"/v1/cards/{i}" for i in random.Random(7).sample(ids, 200)]
        searches = [f"/v1/cards?{httpx.QueryParams(q=q)}" for q in QUERIES]
        transport = httpx.ASGITransport(app=app)
        out: dict[str, Any] = {k: [] for k in PHASES}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(rounds):  # alternated, so drifting load hits all
                out["lookup"].append(await timed(client, lookups, requests))
                out["search"].append(await timed(client, searches, requests))
                with Cached():
                    out["lookup_cached"].append(await timed(client, lookups, requests))
                    out["search_cached"].append(await timed(client, searches, requests))
    return out


async def main(requests: int, rounds: int, home: Path | None) -> dict[str, Any]:
    root = None
    if home is None:
        root = workdir()
        home = root / "home"
    try:
        if LocalCluster(settings(home)).state() is None:
            await prepare(home)
        else:
            await LocalCluster(settings(home)).up()
        result = await measure(home, requests, rounds)
    finally:
        if root is not None:
            await LocalCluster(settings(home)).down(purge=True)
            shutil.rmtree(root, ignore_errors=True)
    return {"benchmark": "routes", "requests": requests, "rounds": rounds, **result}


def render(out: dict[str, Any]) -> None:
    print("| route | round | CPU | mean | p50 | p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label in PHASES.items():
        for i, r in enumerate(out[name], 1):
            print(f"| {label} | {i} | {r['cpu_ms']} ms | {r['mean_ms']} ms | {r['p50_ms']} ms "
                  f"| {r['p95_ms']} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, help="reuse (and keep) this bench cluster")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    out = uvloop.run(main(a.requests, a.rounds, a.home))
    print(json.dumps(out, indent=2)) if a.json else render(out)
