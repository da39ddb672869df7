"""The market value of the inventory (`items.value`: the inventory page's totals and
`GET /v1/inventory/value`) against the size of the inventory.

    .venv/bin/python -m bench.value [--sizes 100000,1000000] [--runs 5] [--home DIR] [--json]

bench.scale's data (a primary alone under /tmp, full catalog, its products and items),
plus a price history: three USD observations for two products in three. At each size,
each filter shape the inventory page sends is timed `--runs` times through the data layer
(median and best). With --home an existing bench cluster is reused and kept, so that two
versions of the query can be compared on the same data in one sitting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.scale import grow, prepare, settings, workdir
from cardmint.cluster.local.engine import LocalCluster
from cardmint.config import secret
from cardmint.db import Database
from cardmint.db.connect import connection
from cardmint.inventory import items

PRICES_SQL = """
INSERT INTO prices (card_id, variant_id, condition, currency, price_cents, source, observed_at)
SELECT p.card_id, p.variant_id, p.condition, 'USD', 100 + (p.id * 37 + d * 11) % 90000,
       'bench-value', now() - make_interval(days => d * 10)
FROM products p CROSS JOIN generate_series(0, 2) d
WHERE p.id % 3 <> 0
ON CONFLICT DO NOTHING
"""
SHAPES: dict[str, items.Filters] = {
    "held (no filter)": items.Filters(),
    "status=IN_STOCK": items.Filters(status="IN_STOCK"),
    "set=base1": items.Filters(set_id="base1"),
    "location=box-7": items.Filters(location="box-7"),
}


async def time_shapes(db: Database, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, filters in SHAPES.items():
        took = []
        for _ in range(runs):
            began = time.perf_counter()
            value = await items.value(db, filters)
            took.append(time.perf_counter() - began)
        out[name] = {"median_ms": round(statistics.median(took) * 1000, 1),
                     "best_ms": round(min(took) * 1000, 1), "items": value["items"],
                     "value_cents": value["value_cents"]}
    return out


async def main(sizes: list[int], runs: int, home: Path | None) -> dict[str, Any]:
    root = None
    if home is None:
        root = workdir()
        home = root / "home"
    s = settings(home)
    result: dict[str, Any] = {"benchmark": "value", "runs": runs, "sizes": []}
    try:
        if LocalCluster(s).state() is None:
            result["setup"] = await prepare(home)
            s = settings(home)
            async with connection(secret(s.migration_url) or "", s) as conn:
                await conn.execute(PRICES_SQL)
                await conn.execute("ANALYZE prices")
        else:
            await LocalCluster(s).up()
        db = await Database(s, replica_dsns=[]).open(monitor=False)
        try:
            have = await db.fetchval("SELECT count(*) FROM inventory_items")
            for size in sizes:
                if size > have:
                    await grow(s, have, size)
                    have = size
                if size < have:
                    print(f"[value] {have:,} items already: {size:,} skipped", file=sys.stderr)
                    continue
                row = {"size": size, **await time_shapes(db, runs)}
                result["sizes"].append(row)
                print(f"[value] {json.dumps(row)}", file=sys.stderr, flush=True)
        finally:
            await db.close()
    finally:
        if root is not None:
            await LocalCluster(s).down(purge=True)
            shutil.rmtree(root, ignore_errors=True)
    return result


def render(out: dict[str, Any]) -> None:
    print("| items | filter | matching items | median | best |")
    print("|---:|---|---:|---:|---:|")
    for row in out["sizes"]:
        for name in SHAPES:
            r = row[name]
            print(f"| {row['size']:,} | {name} | {r['items']:,} | {r['median_ms']} ms "
                  f"| {r['best_ms']} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--home", type=Path, help="reuse (and keep) this bench cluster")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    out = uvloop.run(main([int(x) for x in a.sizes.split(",")], a.runs, a.home))
    print(json.dumps(out, indent=2)) if a.json else render(out)
