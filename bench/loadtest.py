"""CardMint against its limits, each pair measured in the same run.

    .venv/bin/python -m bench.loadtest [--seconds 10] [--concurrency 20] [--json]
    .venv/bin/python -m bench.loadtest --home DIR   # a running cluster, catalog loaded

1. Data layer: point reads through CardMint's `Database` (pool of 20, 20 tasks, uvloop,
   one process) against `pgbench -S -M prepared` with 20 clients: the same statement
   (`SELECT abalance FROM pgbench_accounts WHERE aid = $1`) on the same data (pgbench's own
   database, scale 10), the same transport (TCP loopback to the primary), both prepared.
   Alternated pgbench, CardMint, pgbench, CardMint so that drifting load hits both.
   Also: the API's own card lookup query through `Database`.
2. API at 20 concurrent clients (`cardmint serve` in its own process, the load from this
   one): card lookup and search (throughput, p95), the ratio of API lookup throughput to
   the data layer's point reads, wrk and httpx on one fixed lookup (is the generator the
   bottleneck?), and the application mix of `cardmint loadtest app`: by wrk (its
   requests precomputed from the mix's builders; the "mix" figure and target) when wrk is
   installed, and by httpx beside it (`mix_httpx`, the generator check on the mix).

Without --home it starts a fresh cluster under /tmp (primary + replica), migrates it and
loads the full catalog; everything started is stopped by PID and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import uvloop

from cardmint.catalog import search
from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.state import with_topology
from cardmint.config import Settings, secret
from cardmint.db import Database, migrate
from cardmint.db.connect import connection
from cardmint.ops.loadtest import loadgen, mix, wrk, wrkmix
from cardmint.ops.loadtest.apiserver import serving
from cardmint.ops.loadtest.loadgen import Operation, Request
from cardmint.ops.loadtest.pgbench import (
    PgbenchOptions,
    admin_dsn,
    ensure_dataset,
    pgbench_binary,
    run_pgbench,
)

SCALE = 10
POINT_READ = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"


def settings(home: Path, **kw: Any) -> Settings:
    return with_topology(Settings(_env_file=None, home=home, **kw))  # type: ignore[call-arg]


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def prepare(home: Path) -> None:
    await LocalCluster(settings(home)).up(replicas=1)
    s = settings(home)
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    async with connection(secret(s.migration_url) or "", s) as conn:
        await load_catalog(conn)
        await conn.execute("ANALYZE")


async def point_reads(db: Database, sql: str, args: Any, tasks: int,
                      seconds: float) -> dict[str, Any]:
    """`tasks` loops of one query each through the Database, for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(rng: random.Random) -> None:
        while (start := time.perf_counter()) < deadline:
            await db.fetchrow(sql, args(rng))
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(loop(random.Random(i)) for i in range(tasks)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"qps": round(len(latencies) / elapsed, 1),
            "p50_ms": loadgen.quantile_ms(latencies, 0.5),
            "p95_ms": loadgen.quantile_ms(latencies, 0.95)}


async def child_point_reads(home: Path, tasks: int, seconds: float) -> dict[str, Any]:
    """One process's share of the data layer's point reads (see `procs`)."""
    s = settings(home)
    pool = settings(home, pool_min=tasks, pool_max=tasks)
    db = await Database(pool, primary_dsn=admin_dsn(s), replica_dsns=[]).open(monitor=False)
    try:
        return await point_reads(db, POINT_READ,
                                 lambda rng: rng.randint(1, 100_000 * SCALE), tasks, seconds)
    finally:
        await db.close()


async def procs_point_reads(s: Settings, procs: int, clients: int,
                            seconds: float) -> dict[str, Any]:
    """The point reads from `procs` processes (as `serve --workers` runs), `clients` tasks
    and connections in all: q/s summed, p95 the worst process's."""
    argv = [sys.executable, "-m", "bench.loadtest", "--child-reads", str(clients // procs),
            "--seconds", str(seconds), "--home", str(s.home)]
    children = [await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
                for _ in range(procs)]
    outs = [json.loads((await c.communicate())[0]) for c in children]
    return {"qps": round(sum(o["qps"] for o in outs), 1),
            "p95_ms": max(o["p95_ms"] for o in outs), "processes": procs}


async def data_layer(s: Settings, seconds: int, clients: int,
                     procs: int = 1) -> dict[str, Any]:
    await ensure_dataset(s, SCALE, pgbench_binary(s))
    dsn = admin_dsn(s)  # the superuser on cardmint_pgbench, at the primary over TCP
    pool = settings(s.home, pool_min=clients, pool_max=clients)
    bench_db = await Database(pool, primary_dsn=dsn, replica_dsns=[]).open(monitor=False)
    app_db = await Database(pool, replica_dsns=[]).open(monitor=False)
    rounds: list[dict[str, Any]] = []
    try:
        ids = [r["id"] for r in await app_db.fetch("SELECT id FROM cards")]
        for _ in range(2):
            pgb = await run_pgbench(s, PgbenchOptions(
                clients=clients, jobs=4, duration_s=seconds, select_only=True,
                protocol="prepared", log_latency=False))
            if procs > 1:
                ours = await procs_point_reads(s, procs, clients, seconds)
            else:
                ours = await point_reads(bench_db, POINT_READ,
                                         lambda rng: rng.randint(1, 100_000 * SCALE),
                                         clients, seconds)
            rounds.append({"pgbench_tps": round(pgb["tps"] or 0, 1),
                           "pgbench_avg_ms": pgb["latency_ms"]["avg"],
                           "cardmint_qps": ours["qps"], "cardmint_p95_ms": ours["p95_ms"],
                           "load": load()})
        card = await _card_reads(app_db, ids, clients, seconds)
    finally:
        await bench_db.close()
        await app_db.close()
    pgb_tps = sum(r["pgbench_tps"] for r in rounds) / len(rounds)
    ours_qps = sum(r["cardmint_qps"] for r in rounds) / len(rounds)
    return {"rounds": rounds, "pgbench_tps": round(pgb_tps, 1), "processes": procs,
            "cardmint_qps": round(ours_qps, 1), "ratio": round(ours_qps / pgb_tps, 3),
            "card_lookup_query": card}


async def _card_reads(db: Database, ids: list[str], tasks: int,
                      seconds: float) -> dict[str, Any]:
    """The API's card lookup query (`search.get_card`) through the Database, no HTTP."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(rng: random.Random) -> None:
        while (start := time.perf_counter()) < deadline:
            await search.get_card(db, rng.choice(ids))
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(loop(random.Random(i)) for i in range(tasks)))
    latencies.sort()
    return {"qps": round(len(latencies) / (time.perf_counter() - began), 1),
            "p95_ms": loadgen.quantile_ms(latencies, 0.95)}


def _paths(op: Operation, n: int = 1000) -> list[str]:
    """The same requests the operation sends (fixed seed), as URL paths for wrk."""
    rng = random.Random(11)
    out = []
    for req in (op.build(rng) for _ in range(n)):
        query = f"?{urlencode(req.params, quote_via=quote)}" if req.params else ""
        out.append(req.path + query)
    return out


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    t = result["total"]
    return {k: t[k] for k in ("requests", "throughput_rps", "errors", "p50_ms", "p95_ms",
                              "p99_ms")}


async def api(s: Settings, seconds: int, clients: int, workers: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"workers": workers}
    args = ("--no-monitor", "--no-access-log", "--workers", str(workers))
    async with serving(s, extra_args=args) as (url, _):
        async with loadgen.client(url, 1, 10.0) as http:
            spec, served = await mix.openapi(http)
            cards = await mix.draw_cards(http, random.Random(7))

        async def run(ops: list[Operation]) -> dict[str, Any]:
            return await loadgen.drive(url, ops, concurrency=clients, duration_s=seconds,
                                       warmup_s=2.0, max_requests=10_000_000)

        lookup = Operation("lookup", 1, mix.lookup_request(cards))
        find = Operation("search", 1, mix.search_request(cards))
        fixed_route = f"/v1/cards/{cards[0].id}"
        fixed = Operation("fixed", 1, lambda _rng: Request("GET", fixed_route))
        out["lookup"] = _brief(await run([lookup]))
        out["search"] = _brief(await run([find]))
        out["fixed_httpx"] = _brief(await run([fixed]))
        out["fixed_wrk"] = out["lookup_wrk"] = out["search_wrk"] = None
        if wrk.available():  # wrk on the same routes: the server's pace without httpx
            out["fixed_wrk"] = await wrk.run(url + fixed_route, connections=clients,
                                             duration_s=seconds)
            for name, op in (("lookup_wrk", lookup), ("search_wrk", find)):
                out[name] = await wrk.run(url, connections=clients, duration_s=seconds,
                                          paths=_paths(op))
        weights = mix.parse_mix(mix.DEFAULT_MIX)
        mix_db = await Database(s, replica_dsns=[]).open(monitor=False)
        try:
            from cardmint.tokens import create_token, revoke_token

            token, record = await create_token(mix_db, owner="bench", scope="write")
            async with loadgen.client(url, 1, 10.0) as http:
                ops, skipped, _ = await mix.operations(
                    http, weights, random.Random(7), token, spec, served)
            mixed = await run(ops)
            # wrk after httpx: its plan starts from the item versions httpx left
            by_wrk = (await wrkmix.drive(url, ops, connections=clients, duration_s=seconds)
                      if wrk.available() else None)
            await revoke_token(mix_db, record["id"])
        finally:
            await mix_db.close()
        out["mix_httpx"] = {**_brief(mixed), "generator": "httpx", "skipped": skipped,
                            "operations": {k: {x: v[x] for x in ("requests", "p95_ms", "errors")}
                                           for k, v in mixed["operations"].items()}}
        out["mix"] = ({**_brief(by_wrk), "generator": "wrk", "skipped": skipped,
                       "statuses": by_wrk["statuses"]} if by_wrk else out["mix_httpx"])
        out["load"] = load()
    return out


async def main(home: Path | None, seconds: int, clients: int,
               workers: int = 1) -> dict[str, Any]:
    root = None
    if home is None:
        root = Path(tempfile.mkdtemp(prefix="cardmint-bench-load-", dir="/tmp"))
        root.chmod(0o755)
        home = root / "home"
    try:
        if root is not None:
            await prepare(home)
        s = settings(home)
        began_load = load()
        data = await data_layer(s, seconds, clients, workers)
        served = await api(s, seconds, clients, workers)
    finally:
        if root is not None:
            await LocalCluster(settings(home)).down(purge=True)
            shutil.rmtree(root, ignore_errors=True)
    fixed_wrk = served["fixed_wrk"] or {}
    return {
        "benchmark": "loadtest", "seconds_per_phase": seconds, "clients": clients,
        "cpus": os.cpu_count(), "load_at_start": began_load, "data_layer": data,
        "api": served, "workers": workers, "targets": targets(data, served),
        "ratios": {
            "data_layer_to_pgbench": data["ratio"],
            "api_lookup_to_data_layer": round(
                served["lookup"]["throughput_rps"] / data["cardmint_qps"], 3),
            "api_lookup_to_card_query": round(
                served["lookup"]["throughput_rps"] / data["card_lookup_query"]["qps"], 3),
            "httpx_to_wrk": round(served["fixed_httpx"]["throughput_rps"]
                                  / fixed_wrk["rps"], 3) if fixed_wrk.get("rps") else None,
            "api_lookup_wrk_to_data_layer": round(
                served["lookup_wrk"]["rps"] / data["cardmint_qps"], 3)
            if served["lookup_wrk"] else None,
        },
    }


def render(out: dict[str, Any]) -> None:
    d, a, r = out["data_layer"], out["api"], out["ratios"]
    print(f"load average at start {out['load_at_start']}, {out['cpus']} cores, "
          f"{out['clients']} clients, {out['seconds_per_phase']} s per phase")
    for i, x in enumerate(d["rounds"], 1):
        print(f"  round {i}: pgbench -S -M prepared {x['pgbench_tps']:,.0f} TPS, CardMint "
              f"Database {x['cardmint_qps']:,.0f} q/s (p95 {x['cardmint_p95_ms']} ms), "
              f"load {x['load']}")
    print(f"data layer / pgbench: {r['data_layer_to_pgbench']:.2f}; card lookup query "
          f"{d['card_lookup_query']['qps']:,.0f} q/s")
    rows = [(n, a[n]) for n in ("lookup", "search", "fixed_httpx")]
    rows.append((f"mix_{a['mix']['generator']}", a["mix"]))
    if a["mix"]["generator"] != "httpx":
        rows.append(("mix_httpx", a["mix_httpx"]))
    for name, x in rows:
        print(f"API {name:<11} {x['throughput_rps']:>8,.0f} req/s  p50 {x['p50_ms']} ms  "
              f"p95 {x['p95_ms']} ms  p99 {x['p99_ms']} ms  errors {x['errors']}")
    for name in ("fixed_wrk", "lookup_wrk", "search_wrk"):
        w = a[name]
        if w:
            print(f"API {name:<11} {w['rps']:>8,.0f} req/s  p50 {w.get('p50_ms')} ms  "
                  f"p95 {w.get('p95_ms')} ms  p99 {w.get('p99_ms')} ms  errors {w['errors']}")
    print(f"ratios: {json.dumps(r)}; load at end {a['load']}")
    for t in out["targets"]:
        print(f"target {t['what']}: {t['measured']} (goal {t['goal']}): "
              f"{'met' if t['met'] else 'MISSED'}")


def targets(data: dict[str, Any], served: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets against this run (wrk's figures where wrk ran)."""
    lookup = served["lookup_wrk"] or served["lookup"]
    search = served["search_wrk"] or served["search"]
    mixed = served["mix"]
    rows = [("data layer / pgbench -S -M prepared", data["ratio"], ">= 0.5",
             data["ratio"] >= 0.5),
            ("card lookup p95 ms", lookup.get("p95_ms"), "<= 10",
             (lookup.get("p95_ms") or 1e9) <= 10),
            ("search p95 ms", search.get("p95_ms"), "<= 25",
             (search.get("p95_ms") or 1e9) <= 25),
            (f"mix p95 ms, errors ({mixed['generator']})",
             f"{mixed['p95_ms']}, {mixed['errors']}", "<= 25, 0",
             (mixed["p95_ms"] or 1e9) <= 25 and mixed["errors"] == 0)]
    return [{"what": w, "measured": m, "goal": g, "met": ok} for w, m, g, ok in rows]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2,
                        help="server processes (serve --workers) and data-layer processes")
    parser.add_argument("--child-reads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child_reads:  # one process of the data layer's share (procs_point_reads)
        print(json.dumps(uvloop.run(child_point_reads(args.home, args.child_reads,
                                                      args.seconds))))
        sys.exit(0)
    result = uvloop.run(main(args.home, args.seconds, args.concurrency, args.workers))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        render(result)
    sys.exit(0)
