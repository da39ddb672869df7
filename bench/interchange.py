"""Importing and exporting large inventory files (issue 16): a Collectr file of N rows
imported with `cardmint inventory import` (add, then sync of the same file, which must
change nothing, then a dry run), and exported again, each as its own process so that its
wall time and peak RSS are its own.

    .venv/bin/python -m bench.interchange [--rows 10000,100000] [--json]

A primary alone under /tmp with the full catalog. The file: rows drawn from the catalog's
printings (set, name, number, the printing's label), 1-3 copies each, 5 portfolios (the
locations), one row in 20 graded, costs with 4 decimals. Peak RSS at two sizes shows the
memory does not grow with the rows (they are streamed; what grows is one total per item
kind and the first 10,000 per-row answers).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.scale import settings, workdir
from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.config import secret
from cardmint.db import migrate
from cardmint.db.connect import connection
from cardmint.inventory.interchange import exports
from cardmint.inventory.interchange.matching import Variant, label

VARIANTS_SQL = """
SELECT v.id, v.card_id, v.type, v.subtype, v.size, v.stamps, v.foil, v.tcgplayer_product_id,
       c.name, c.local_id, c.rarity, s.name AS set_name, s.printed_total
FROM card_variants v JOIN cards c ON c.id = v.card_id JOIN sets s ON s.id = c.set_id
WHERE coalesce(v.size, 'standard') = 'standard'
ORDER BY v.id
"""
CONDITIONS = ("Near Mint", "Near Mint", "Near Mint", "Lightly Played", "Moderately Played")


async def prepare(home: Path) -> list[Any]:
    await LocalCluster(settings(home)).up(replicas=0)
    s = settings(home)
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    async with connection(secret(s.migration_url) or "", s) as conn:
        await load_catalog(conn)
        return list(await conn.fetch(VARIANTS_SQL))


def write_file(path: Path, variants: list[Any], rows: int, seed: int = 16) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(exports.header("collectr"))
        for n in range(rows):
            v = rng.choice(variants)
            number = (f"{v['local_id']}/{v['printed_total']}" if v["printed_total"]
                      and v["local_id"][:1] in "0123456789" else v["local_id"])
            printing = label(Variant(v["id"], v["card_id"], v["type"], v["subtype"], v["size"],
                                     tuple(v["stamps"] or ()), v["foil"],
                                     v["tcgplayer_product_id"]))
            graded = rng.random() < 0.05
            writer.writerow([
                f"portfolio-{n % 5}", "Pokemon", v["set_name"], v["name"], number,
                v["rarity"] or "", printing,
                f"PSA {rng.choice((8, 9, 10))}" if graded else "Ungraded",
                rng.choice(CONDITIONS), f"{rng.randint(1, 500_000) / 10_000:.4f}",
                rng.randint(1, 3), "1.00", "0", "false", "2026-01-02", ""])


def _peak_rss_mb(stderr: bytes) -> float | None:
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("[peak-rss-kb] "):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def main(rows: list[int]) -> dict[str, Any]:
    root = workdir()
    home = root / "home"
    result: dict[str, Any] = {"benchmark": "interchange", "cpus": os.cpu_count(), "runs": []}
    try:
        variants = uvloop.run(prepare(home))
        for n in rows:
            path = root / f"collectr-{n}.csv"
            write_file(path, variants, n)
            run: dict[str, Any] = {"rows": n, "file_mb": round(path.stat().st_size / 2**20, 1)}
            for phase, args in (
                ("add", ("inventory", "import", str(path), "--json")),
                ("sync (same file)", ("inventory", "import", str(path), "--mode", "sync",
                                      "--json")),
                ("dry run (sync)", ("inventory", "import", str(path), "--mode", "sync",
                                    "--dry-run", "--json")),
                ("export collectr", ("inventory", "export", "--format", "collectr", "-o",
                                     str(root / "out.csv"))),
            ):
                got = measure(home, *args)
                a = got.pop("answer") or {}
                got.update({k: a.get(k) for k in ("matched", "unmatched", "errors",
                                                  "items_added", "items_removed",
                                                  "items_unchanged") if a})
                if a and "results" not in a:
                    got["error"] = a
                elif a:
                    got["not_matched"] = [f"{r['line']}: {r['reason']}" for r in a["results"]
                                          if r["status"] != "matched"][:20]
                run[phase] = got
                print(f"[interchange] {n:,} rows, {phase}: {got}", file=sys.stderr, flush=True)
            result["runs"].append(run)
            uvloop.run(_empty(home))
    finally:
        uvloop.run(LocalCluster(settings(home)).down(purge=True))
        shutil.rmtree(root, ignore_errors=True)
    return result


def measure(home: Path, *args: str) -> dict[str, Any]:
    """`cardmint ARGS` under a wrapper that reports the child's peak RSS (ru_maxrss)."""
    wrapper = ("import resource, runpy, sys\n"
               "sys.argv = ['cardmint', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('cardmint', run_name='__main__')\n"
               "finally:\n    print('[peak-rss-kb]', resource.getrusage("
               "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    return _wrapped(home, wrapper, args)


def _wrapped(home: Path, wrapper: str, args: tuple[str, ...]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(home)
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True,
                          env=env, timeout=3600)
    took = time.perf_counter() - began
    answer = json.loads(proc.stdout) if proc.stdout.startswith(b"{") else None
    return {"seconds": round(took, 1), "peak_rss_mb": _peak_rss_mb(proc.stderr),
            "exit": proc.returncode, "answer": answer,
            **({"stderr": proc.stderr.decode()[-800:]} if proc.returncode > 1 else {})}


async def _empty(home: Path) -> None:
    s = settings(home)
    async with connection(secret(s.migration_url) or "", s) as conn:
        # the ledger refuses deletes (a trigger): off for this one statement, on a bench
        await conn.execute("ALTER TABLE inventory_ledger DISABLE TRIGGER "
                           "inventory_ledger_append_only")
        await conn.execute("TRUNCATE inventory_ledger, inventory_items, products, "
                           "tcgplayer_skus, prices CASCADE")
        await conn.execute("ALTER TABLE inventory_ledger ENABLE TRIGGER "
                           "inventory_ledger_append_only")


def render(out: dict[str, Any]) -> None:
    print(f"{out['cpus']} cores")
    print("| rows (file) | phase | seconds | peak RSS | matched | added | removed | unchanged |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for run in out["runs"]:
        for phase, x in run.items():
            if not isinstance(x, dict):
                continue
            print(f"| {run['rows']:,} ({run['file_mb']} MB) | {phase} | {x['seconds']} | "
                  f"{x['peak_rss_mb']} MB | {x.get('matched', '')} | "
                  f"{x.get('items_added', '')} | {x.get('items_removed', '')} | "
                  f"{x.get('items_unchanged', '')} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = main(sorted(int(x) for x in args.rows.split(",")))
    print(json.dumps(result, indent=2, default=str) if args.json else "", end="")
    if not args.json:
        render(result)
