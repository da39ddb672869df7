"""How CardMint's cost grows with its data: card lookup, search and the inventory listing at
10k, 100k and 1M inventory items (issue 8, item 5).

    .venv/bin/python -m bench.scale [--sizes 10000,100000,1000000] [--seconds 10] [--json]

A fresh cluster under /tmp (a primary alone, so that the bulk inserts do not also stream
to a replica), migrated, the full catalog loaded, products spread over the variants (every
variant NM, a share of them also LP/MP/HP/DMG and a few Japanese). Then the inventory is
grown in steps to each size with one INSERT ... SELECT as the owner role (statuses 70 %
IN_STOCK, 10 % RESERVED, 15 % SOLD, 5 % REMOVED; 500 locations; 2 % graded; products
skewed towards the low ids) and VACUUM ANALYZE, then it waits until the build's WAL is
archived and checkpointed (`settle_s`). At each size, `cardmint serve` runs in its own
process and 20 clients drive, one operation at a time after 3 s of it uncounted: card
lookup, search, and the inventory listing (a read token, LISTING_SHAPES' filters and a
page). With wrk when installed (the Authorization header set inside its Lua script, never
on a command line), else the project's httpx generator. At the largest size it prints
EXPLAIN (ANALYZE, BUFFERS) of the listing's statements and one client's time for every
filter shape at pages 1, 5, 200 and by keyset. Everything started is stopped by PID and
deleted at the end.
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

from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.state import with_topology
from cardmint.config import Settings, secret
from cardmint.db import Database, migrate, one
from cardmint.db.connect import connection
from cardmint.inventory import items
from cardmint.ops import facts
from cardmint.ops.loadtest import loadgen, mix, wrk
from cardmint.ops.loadtest.apiserver import serving
from cardmint.ops.loadtest.loadgen import Operation, Request

# Every variant NM; about a third also in one other condition; 1 in 20 also Japanese NM.
PRODUCTS_SQL = """
INSERT INTO products (card_id, variant_id, condition, language, sku)
SELECT card_id, id, 'NM', 'en', 'S-' || id || '-NM' FROM card_variants
UNION ALL
SELECT card_id, id, (ARRAY['LP', 'MP', 'HP', 'DMG'])[1 + id % 4], 'en',
       'S-' || id || '-' || (ARRAY['LP', 'MP', 'HP', 'DMG'])[1 + id % 4]
FROM card_variants WHERE id % 3 = 0
UNION ALL
SELECT card_id, id, 'NM', 'ja', 'S-' || id || '-NM-JA' FROM card_variants WHERE id % 20 = 0
"""
# Items g in (from, to]: a product drawn with a skew towards low ids (popular sets), status
# by g's hash, 500 locations, 2 % graded with a unique cert.
ITEMS_SQL = """
INSERT INTO inventory_items (product_id, status, location, acquisition_cost_cents,
                             acquired_on, grading_company, grade, cert_number)
SELECT p.ids[1 + floor(cardinality(p.ids) * power(h, 1.5))::int],
       CASE WHEN s < 70 THEN 'IN_STOCK' WHEN s < 80 THEN 'RESERVED'
            WHEN s < 95 THEN 'SOLD' ELSE 'REMOVED' END,
       'box-' || (g * 7 % 500),
       CASE WHEN g % 10 = 0 THEN NULL ELSE 50 + g % 5000 END,
       date '2024-01-01' + (g % 700)::int,
       CASE WHEN g % 50 = 0 THEN 'PSA' END,
       CASE WHEN g % 50 = 0 THEN 6 + (g % 5)::int END,
       CASE WHEN g % 50 = 0 THEN 'B' || g END
FROM generate_series($1::bigint + 1, $2::bigint) g
CROSS JOIN LATERAL (SELECT ((g * 2654435761) % 4294967296) / 4294967296.0 AS h,
                           (g * 40503) % 100 AS s) r,
     (SELECT array_agg(id ORDER BY id) AS ids FROM products) p
"""
LISTING_LOCATIONS = 500
WARMUP_S = 3


def settings(home: Path, **kw: Any) -> Settings:
    return with_topology(Settings(_env_file=None, home=home, **kw))  # type: ignore[call-arg]


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def prepare(home: Path) -> dict[str, Any]:
    began = time.perf_counter()
    await LocalCluster(settings(home)).up(replicas=0)
    s = settings(home)
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    async with connection(secret(s.migration_url) or "", s) as conn:
        await load_catalog(conn)
        await conn.execute(PRODUCTS_SQL)
        await conn.execute("ANALYZE")
        products = await conn.fetchval("SELECT count(*) FROM products")
    return {"setup_s": round(time.perf_counter() - began, 1), "products": products}


async def grow(s: Settings, have: int, want: int) -> dict[str, Any]:
    """Items have+1..want in one statement, then VACUUM ANALYZE (visibility map, stats)."""
    began = time.perf_counter()
    async with connection(secret(s.migration_url) or "", s) as conn:
        if want > have:
            await conn.execute(ITEMS_SQL, have, want, timeout=3600)
        insert_s = time.perf_counter() - began
        await conn.execute("VACUUM ANALYZE inventory_items", timeout=3600)
        size = await conn.fetchval("SELECT pg_total_relation_size('inventory_items')")
        count = await conn.fetchval("SELECT count(*) FROM inventory_items")
    return {"items": count, "insert_s": round(insert_s, 1),
            "with_vacuum_s": round(time.perf_counter() - began, 1),
            "table_mb": round(size / 2**20, 1)}


def _shelf(rng: random.Random) -> str:
    return f"box-{rng.randrange(LISTING_LOCATIONS)}"


# The listing's filters as a shop's screens ask them, with their share of the requests:
# every filter alone and the usual pairs (issue 19: "any filter").
LISTING_SHAPES: list[tuple[float, Any]] = [
    (0.25, lambda r, sets: {"status": "IN_STOCK", "location": _shelf(r)}),  # a shelf
    (0.20, lambda r, sets: {"set": r.choice(sets), "condition": r.choice(["NM", "LP"])}),
    (0.15, lambda r, sets: {"status": "IN_STOCK"}),                         # everything
    (0.10, lambda r, sets: {"set": r.choice(sets)}),
    (0.05, lambda r, sets: {"condition": r.choice(["LP", "MP", "HP", "DMG"])}),
    (0.05, lambda r, sets: {"status": r.choice(["SOLD", "REMOVED", "RESERVED"])}),
    (0.05, lambda r, sets: {"graded": "true", "status": "IN_STOCK"}),
    (0.05, lambda r, sets: {"set": r.choice(sets), "location": _shelf(r)}),
    (0.05, lambda r, sets: {"card": f"{r.choice(sets)}-{r.randint(1, 50)}"}),
    (0.05, lambda r, sets: {"location": _shelf(r), "graded": "false",
                            "condition": r.choice(["NM", "LP"])}),
]


def listing_request(sets: list[str], headers: dict[str, str]) -> Any:
    """One of LISTING_SHAPES and a page (1-5 of 50)."""
    def build(rng: random.Random) -> Request:
        pick, params = rng.random(), None
        for share, shape in LISTING_SHAPES:
            pick -= share
            if pick < 0:
                params = shape(rng, sets)
                break
        params = (params or {}) | {"page": str(rng.randint(1, 5)), "pageSize": "50"}
        return Request("GET", "/v1/inventory/items", params=params, headers=headers)
    return build


def _paths(op: Operation, n: int = 1000) -> list[str]:
    rng = random.Random(11)
    out = []
    for req in (op.build(rng) for _ in range(n)):
        query = f"?{urlencode(req.params, quote_via=quote)}" if req.params else ""
        out.append(req.path + query)
    return out


async def run_wrk(url: str, paths: list[str], headers: dict[str, str], *, connections: int,
                  duration_s: int) -> dict[str, Any]:
    """wrk cycling `paths`, headers in its script (not argv); the figures this bench keeps."""
    r = await wrk.run(url, connections=connections, duration_s=duration_s, paths=paths,
                      headers=headers)
    return {"tool": "wrk", "rps": r["rps"], "p50_ms": r.get("p50_ms"),
            "p95_ms": r.get("p95_ms"), "p99_ms": r.get("p99_ms"), "errors": r["errors"]}


async def measure(s: Settings, token: str, sets: list[str], seconds: int,
                  clients: int, workers: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": load()}
    headers = {"Authorization": f"Bearer {token}"}
    args = ("--no-monitor", "--no-access-log", "--workers", str(workers))
    async with serving(s, extra_args=args) as (url, _pid):
        async with loadgen.client(url, 1, 10.0) as http:
            cards = await mix.draw_cards(http, random.Random(7))
        ops = {"lookup": Operation("lookup", 1, mix.lookup_request(cards)),
               "search": Operation("search", 1, mix.search_request(cards)),
               "listing": Operation("listing", 1, listing_request(sets, headers))}
        for name, op in ops.items():
            if wrk.available():
                sent = headers if name == "listing" else {}
                # issue 19's protocol: 3 s of the same requests first, not counted (the
                # server's caches and PostgreSQL's buffers warm, as in service)
                await run_wrk(url, _paths(op), sent, connections=clients, duration_s=WARMUP_S)
                out[name] = await run_wrk(url, _paths(op), sent, connections=clients,
                                          duration_s=seconds)
            else:
                r = (await loadgen.drive(url, [op], concurrency=clients, duration_s=seconds,
                                         warmup_s=2.0, max_requests=10_000_000))["total"]
                out[name] = {"tool": "httpx", "rps": r["throughput_rps"],
                             "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"],
                             "p99_ms": r["p99_ms"], "errors": r["errors"]}
    out["load_after"] = load()
    return out


EXPLAIN_CASES = {
    "status+location, page 1": (items.Filters(status="IN_STOCK", location="box-7"), 1),
    "set+condition, page 3": (items.Filters(set_id="base1", condition="NM"), 3),
    "status only, page 5": (items.Filters(status="IN_STOCK"), 5),
}


async def explain(s: Settings) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the listing's statements exactly as items.listing
    sends them: a shelf's count then its page of ids, or the ids and count in one; then
    the rows of the last page."""
    out = {}
    async with connection(secret(s.migration_url) or "", s) as conn:
        ids: list[int] = []
        for name, (filters, page) in EXPLAIN_CASES.items():
            collect, with_total = items.collects(filters), True
            if filters.location is not None:
                sql, *args = items.count_query(filters)
                counted = one(await conn.fetchrow(sql, *args))
                out[f"{name}: count"] = [r[0] for r in await conn.fetch(
                    f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)]
                collect = items.collects(filters, total=counted["total"],
                                         size=counted["size"], depth=page * 50)
                with_total = False
            sql, *args = items.listing_query(filters, page=page, page_size=50,
                                             collect=collect, with_total=with_total)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
            out[f"{name}: ids"] = [r[0] for r in rows]
            ids = list(await conn.fetchval(sql, *args))
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {items.PAGE_ROWS_SQL}", ids)
        out["the page's rows, priced"] = [r[0] for r in rows]
    return out


async def shapes(s: Settings) -> list[dict[str, Any]]:
    """One client, items.listing as the API calls it, for every filter alone and in the
    usual pairs, on the most stocked set and card, a middling set, a shelf: the best of 3
    runs (ms) at pages 1, 5 and 200 of 50, and by keyset from the middle of the matches."""
    db = await Database(s, replica_dsns=[]).open(monitor=False)
    try:
        by_size = [r["set_id"] for r in await db.fetch(
            "SELECT set_id FROM inventory_set_totals GROUP BY 1 ORDER BY sum(items) DESC")]
        big, middling = by_size[0], by_size[len(by_size) // 2]
        card = await db.fetchval("SELECT p.card_id FROM inventory_totals t JOIN products p "
                                 "ON p.id = t.product_id GROUP BY 1 ORDER BY sum(t.items) "
                                 "DESC LIMIT 1")
        F = items.Filters
        cases = {
            "no filter": F(), "in stock": F(status="IN_STOCK"), "removed": F(status="REMOVED"),
            "condition NM": F(condition="NM"), "condition DMG": F(condition="DMG"),
            "graded": F(graded=True), "graded DMG": F(graded=True, condition="DMG"),
            "shelf box-7 (a prefix: 11 shelves)": F(location="box-7"),
            "shelf box-123 in stock": F(location="box-123", status="IN_STOCK"),
            f"set {big}": F(set_id=big), f"set {big} LP": F(set_id=big, condition="LP"),
            f"set {middling} NM in stock": F(set_id=middling, condition="NM",
                                             status="IN_STOCK"),
            f"set {big} shelf box-7": F(set_id=big, location="box-7"),
            f"card {card}": F(card_id=card),
            f"card {card} shelf box-1": F(card_id=card, location="box-1"),
            "shelf box-1 NM ungraded": F(location="box-1", condition="NM", graded=False),
        }
        out = []
        for name, f in cases.items():
            row: dict[str, Any] = {"shape": name}
            middle, _ = await items.listing(db, f, page=await items.count(db, f) // 2 + 1,
                                            page_size=1)
            for label, page, after in (("p1", 1, None), ("p5", 5, None), ("p200", 200, None),
                                       ("after", 1, middle[0]["id"] if middle else 0)):
                times = []
                for _ in range(3):
                    began = time.perf_counter()
                    _, row["total"] = await items.listing(db, f, page=page, page_size=50,
                                                          after=after)
                    times.append((time.perf_counter() - began) * 1000)
                row[label] = round(min(times), 2)
            out.append(row)
        return out
    finally:
        await db.close()


async def settle(s: Settings, timeout_s: float = 900.0) -> float:
    """Until the build's WAL is archived and a checkpoint has written its pages: a bulk
    build leaves pgBackRest compressing gigabytes of WAL and the checkpointer flushing for
    minutes after it, which is the build's cost, not the service's."""
    began = time.perf_counter()
    async with connection(secret(s.admin_url) or "", s) as conn:
        segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        while True:
            last = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
            if facts.archived_through(last, segment):
                break
            if time.perf_counter() - began > timeout_s:
                raise SystemExit(f"WAL {segment} not archived within {timeout_s:g} s")
            await asyncio.sleep(0.5)
        await conn.execute("CHECKPOINT")
    return round(time.perf_counter() - began, 1)


def workdir() -> Path:
    """Under /tmp, open to the PostgreSQL OS user (mkdtemp makes it 0700)."""
    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-scale-", dir="/tmp"))
    root.chmod(0o755)
    return root


async def main(root: Path, sizes: list[int], seconds: int, clients: int,
               keep: bool = False, workers: int = 1) -> dict[str, Any]:
    home = root / "home"
    result: dict[str, Any] = {"benchmark": "scale", "cpus": os.cpu_count(),
                              "clients": clients, "seconds": seconds, "workers": workers,
                              "sizes": []}
    try:
        result["setup"] = await prepare(home)
        s = settings(home)
        db = await Database(s, replica_dsns=[]).open(monitor=False)
        try:
            from cardmint.tokens import create_token, revoke_token

            token, record = await create_token(db, owner="bench-scale", scope="read")
            sets = [r["set_id"] for r in await db.fetch(
                "SELECT c.set_id FROM cards c GROUP BY 1 HAVING count(*) >= 50 ORDER BY 1")]
            have = 0
            for size in sizes:
                built = await grow(s, have, size)
                built["settle_s"] = await settle(s)
                have = size
                print(f"[scale] {size:,} items built: {built}", file=sys.stderr, flush=True)
                row = {"size": size, "build": built,
                       **await measure(s, token, sets, seconds, clients, workers)}
                result["sizes"].append(row)
                print(f"[scale] {size:,}: " + json.dumps(
                    {k: row[k] for k in ("lookup", "search", "listing", "load_before")}),
                    file=sys.stderr, flush=True)
            result["explain"] = await explain(s)
            result["shapes"] = await shapes(s)
            await revoke_token(db, record["id"])
        finally:
            await db.close()
    finally:
        if not keep:
            await LocalCluster(settings(home)).down(purge=True)
            shutil.rmtree(root, ignore_errors=True)
    return result


def render(out: dict[str, Any]) -> None:
    print(f"{out['cpus']} cores, {out['clients']} clients, {out['seconds']} s per operation; "
          f"setup {out['setup']}")
    print("| items | build | operation | req/s | p50 ms | p95 ms | errors | load |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for row in out["sizes"]:
        b = row["build"]
        for op in ("lookup", "search", "listing"):
            x = row[op]
            print(f"| {row['size']:,} | {b['with_vacuum_s']} s, {b['table_mb']} MB | {op} "
                  f"({x['tool']}) | {x['rps']:,.0f} | {x['p50_ms']} | {x['p95_ms']} | "
                  f"{x['errors']} | {row['load_before']}–{row['load_after']} |")
    print(f"\nOne client, items.listing at {out['sizes'][-1]['size']:,} items, best of 3 (ms):")
    print("| filters | matching | page 1 | page 5 | page 200 | keyset, mid-way |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in out.get("shapes", []):
        print(f"| {r['shape']} | {r['total']:,} | {r['p1']} | {r['p5']} | {r['p200']} | "
              f"{r['after']} |")
    for name, plan in out.get("explain", {}).items():
        print(f"\nEXPLAIN ANALYZE, listing {name}, at {out['sizes'][-1]['size']:,} items:")
        print("\n".join(plan))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="cardmint serve --workers")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster running (its home is printed); stop it with "
                             "`cardmint cluster down --purge --home HOME`")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))
    root = workdir()
    if args.keep:
        print(f"[scale] cluster home {root / 'home'} (kept)", file=sys.stderr, flush=True)
    result = uvloop.run(main(root, sizes, args.seconds, args.concurrency, args.keep,
                             args.workers))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        render(result)
    sys.exit(0)
