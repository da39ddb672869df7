"""Backup throughput and the time from `backup restore` to a verified, promoted primary,
on the full catalog plus 100,000 inventory items.

    .venv/bin/python -m bench.backup [--runs 3] [--items 100000] [--json]

One cluster (primary + streaming replica) under a fresh directory in /tmp: migrated, the
catalog loaded, the items inserted. Then, --runs times: a base backup (server-side zstd,
WAL streamed), its verification, and a point-in-time restore to a moment after a marked
delete into a new directory, verified with health and test-card, then discarded (stopped
by PID, deleted). Figures are medians; everything is stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.state import with_topology
from cardmint.config import Settings, secret
from cardmint.db import migrate
from cardmint.db.connect import connection
from cardmint.ops.backups import backup, restore

PRODUCTS_SQL = """
INSERT INTO products (card_id, variant_id, condition, sku)
SELECT card_id, id, 'NM', 'BENCH-' || id FROM card_variants
"""
ITEMS_SQL = """
INSERT INTO inventory_items (product_id, location, acquisition_cost_cents, acquired_on)
SELECT p.ids[1 + g % cardinality(p.ids)], 'box-' || (g % 500), 50 + g % 5000,
       date '2026-01-01' + (g % 300)
FROM generate_series(1, $1) g, (SELECT array_agg(id ORDER BY id) AS ids FROM products) p
"""


def settings(home: Path) -> Settings:
    return with_topology(Settings(_env_file=None, home=home))  # type: ignore[call-arg]


async def prepare(home: Path, items: int) -> dict[str, Any]:
    began = time.perf_counter()
    await LocalCluster(settings(home)).up(replicas=1)
    s = settings(home)  # the DSNs `up` wrote into cluster.json
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    async with connection(secret(s.migration_url) or "", s) as conn:
        catalog = await load_catalog(conn)
        await conn.execute(PRODUCTS_SQL)
        await conn.execute(ITEMS_SQL, items)
        await conn.execute("ANALYZE")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                  for t in ("cards", "card_variants", "products", "inventory_items")}
    return {"setup_s": round(time.perf_counter() - began, 2), "database_bytes": size,
            "rows": counts, "catalog_load_s": catalog.duration_s}


async def one_run(s: Settings, root: Path, n: int) -> dict[str, Any]:
    made = await backup.create(s)
    began = time.perf_counter()
    verified = await backup.verify(s, made["id"])
    verify_s = time.perf_counter() - began
    async with connection(secret(s.admin_url) or "", s) as conn:
        await conn.execute("INSERT INTO incidents (title, severity) VALUES ('bench', 'P2')")
        moment = await conn.fetchval("SELECT clock_timestamp()")
        await conn.execute("DELETE FROM incidents WHERE title = 'bench'")
    report = await restore.restore(s, to=root / f"restored-{n}", target_time=moment)
    try:
        ok = report["ok"]
    finally:
        await restore.discard(s, report["node"])
    return {
        "backup_s": made["duration_s"], "backup_size_bytes": made["size_bytes"],
        "data_bytes": made["data_bytes"], "throughput_mb_s": made["throughput_mb_s"],
        "verify_s": round(verify_s, 3), "verified": verified["ok"],
        "restore_promoted_s": report["promoted_s"], "restore_verified_s": report["duration_s"],
        "restore_ok": ok, **{f"restore_{k}": v for k, v in report["steps"].items()},
    }


def workdir() -> Path:
    """Under /tmp, open to the PostgreSQL OS user (mkdtemp makes it 0700)."""
    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-backup-", dir="/tmp"))
    root.chmod(0o755)
    return root


async def main(runs: int, items: int) -> dict[str, Any]:
    root = workdir()
    try:
        setup = await prepare(root / "home", items)
        s = settings(root / "home")
        results = [await one_run(s, root, n) for n in range(runs)]
    finally:
        await LocalCluster(settings(root / "home")).down(purge=True)
        shutil.rmtree(root, ignore_errors=True)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in results), 3)

    return {
        **setup, "runs": runs,
        "backup_s": median("backup_s"), "backup_size_bytes": int(median("backup_size_bytes")),
        "data_bytes": int(median("data_bytes")), "throughput_mb_s": median("throughput_mb_s"),
        "verify_s": median("verify_s"), "restore_promoted_s": median("restore_promoted_s"),
        "restore_verified_s": median("restore_verified_s"),
        "restore_steps": {k: median(f"restore_{k}") for k in
                          ("archive_wait_s", "extract_s", "recovery_s", "verify_s")},
        "all_ok": all(r["verified"] and r["restore_ok"] for r in results),
        "each": results, "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main(args.runs, args.items))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        mb = 2**20
        print(f"database {out['database_bytes'] / mb:.0f} MB ({out['rows']}); "
              f"median of {out['runs']} runs:")
        print(f"  backup: {out['backup_s']:.2f} s, {out['data_bytes'] / mb:.0f} MB of data -> "
              f"{out['backup_size_bytes'] / mb:.0f} MB on disk, {out['throughput_mb_s']} MB/s")
        print(f"  verify (pg_verifybackup + WAL continuity): {out['verify_s']:.2f} s")
        print(f"  restore to a time: promoted after {out['restore_promoted_s']:.2f} s, "
              f"verified (health + test-card) after {out['restore_verified_s']:.2f} s")
        print(f"    steps: {out['restore_steps']}")
        print(f"  all verified and restored: {out['all_ok']}")
    sys.exit(0 if out["all_ok"] else 1)
