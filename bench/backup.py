"""pgBackRest backups (full, differential, incremental) against pg_basebackup, the time
from `backup restore` to a verified, promoted primary, and the archive's lag under
writes; on the full catalog plus N inventory items.

    .venv/bin/python -m bench.backup [--items 1000000] [--json]

One cluster (primary + streaming replica) under a fresh directory in /tmp: migrated, the
catalog loaded, the items inserted. Then: pg_basebackup as the old code ran it (tar,
server-side zstd, WAL streamed) into a scratch directory; a full pgBackRest backup; 1 %
of the items changed, a differential; another 1 %, an incremental; `backup verify`; a
point-in-time restore (verified with health and test-card, then discarded); and a write
load (bulk inserts) while the archive's backlog (.ready files) is sampled. Everything is
stopped by PID and deleted at the end.
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

from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.pg.admin import NodeAdmin
from cardmint.cluster.state import REPLICATION, with_topology
from cardmint.config import Settings, secret
from cardmint.db import migrate
from cardmint.db.connect import connection
from cardmint.ops.backups import backup, pitr, store

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
# 1 % of the items: the newest (contiguous pages: what an inventory's churn touches),
# or, with --scattered, every hundredth (which touches nearly every page of the table)
CHANGE_SQL = ("UPDATE inventory_items SET location = 'moved-' || $1::text "
              "WHERE id > (SELECT max(id) FROM inventory_items) - $2 * (SELECT count(*) / 100 "
              "FROM inventory_items) AND id <= (SELECT max(id) FROM inventory_items) - "
              "($2 - 1) * (SELECT count(*) / 100 FROM inventory_items)")
SCATTERED_SQL = ("UPDATE inventory_items SET location = 'moved-' || $1::text "
                 "WHERE id % 100 = $2")
MB = 2**20


def settings(home: Path) -> Settings:
    return with_topology(Settings(_env_file=None, home=home))  # type: ignore[call-arg]


async def prepare(home: Path, items: int) -> dict[str, Any]:
    began = time.perf_counter()
    await LocalCluster(settings(home)).up(replicas=1)
    s = settings(home)  # the DSNs `up` wrote into cluster.json
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    async with connection(secret(s.migration_url) or "", s) as conn:
        await load_catalog(conn)
        await conn.execute(PRODUCTS_SQL)
        await conn.execute(ITEMS_SQL, items)
        await conn.execute("ANALYZE")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                  for t in ("cards", "card_variants", "products", "inventory_items")}
    return {"setup_s": round(time.perf_counter() - began, 2), "database_bytes": size,
            "rows": counts}


async def basebackup(s: Settings, root: Path) -> dict[str, Any]:
    """pg_basebackup as the old `backup create` ran it."""
    site = store.site(s)
    primary = site.state.primary
    dest = root / "basebackup"
    site.user.own(dest)
    began = time.perf_counter()
    await store.run(site.user, [
        site.pg("pg_basebackup"), "-D", str(dest), "--format=tar", "--wal-method=stream",
        "--checkpoint=fast", "--manifest-checksums=CRC32C", "--compress=server-zstd",
        "-h", primary.host, "-p", str(primary.port), "-U", REPLICATION, "--no-password"],
        env={"PGPASSWORD": NodeAdmin(s).passwords()[REPLICATION]})
    took = time.perf_counter() - began
    data = sum(int(f.get("Size", 0)) for f in json.loads(
        (dest / "backup_manifest").read_text())["Files"])
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    shutil.rmtree(dest, ignore_errors=True)
    return {"s": round(took, 3), "data_bytes": data, "written_bytes": written,
            "mb_s": round(data / MB / took, 1)}


async def pgbackrest(s: Settings, kind: str) -> dict[str, Any]:
    began = time.perf_counter()
    made = await backup.create(s, kind=kind, repo=1)
    took = time.perf_counter() - began
    return {"s": round(took, 3), "type": made["type"], "data_bytes": made["data_bytes"],
            "changed_bytes": made["delta_bytes"], "written_bytes": made["size_bytes"],
            "mb_s": round(made["delta_bytes"] / MB / took, 1), "id": made["id"]}


async def change(s: Settings, n: int, scattered: bool) -> int:
    async with connection(secret(s.migration_url) or "", s) as conn:
        done = await conn.execute(SCATTERED_SQL if scattered else CHANGE_SQL, str(n), n)
    return int(done.split()[-1])


async def archive_lag(s: Settings, seconds: float) -> dict[str, Any]:
    """Bulk inserts for `seconds` while the archive backlog is sampled every 0.1 s: how
    many finished segments wait for archive-push, and how long the oldest has waited."""
    samples: list[tuple[int, float]] = []
    stop = asyncio.Event()
    async with connection(secret(s.admin_url) or "", s) as watch, \
            connection(secret(s.migration_url) or "", s) as writer:
        before = await watch.fetchrow("SELECT archived_count, pg_current_wal_lsn() AS lsn "
                                      "FROM pg_stat_archiver")

        async def sample() -> None:
            while not stop.is_set():
                row = await watch.fetchrow(
                    "SELECT count(*) AS ready, coalesce(extract(epoch FROM now() - "
                    "min(modification)), 0)::float8 AS oldest FROM pg_ls_archive_statusdir() "
                    "WHERE name LIKE '%.ready'")
                samples.append((row["ready"], row["oldest"]))
                await asyncio.sleep(0.1)

        task = asyncio.create_task(sample())
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            await writer.execute(ITEMS_SQL, 20_000)
        wrote_s = time.perf_counter() - began
        after = await watch.fetchrow("SELECT pg_current_wal_lsn() AS lsn, "
                                     "pg_walfile_name(pg_switch_wal()) AS last")
        # until the archive holds every segment the load wrote
        site = store.site(s)
        drained = await store.await_archived(site, after["last"], 120)
        drain_s = time.perf_counter() - began - wrote_s
        stop.set()
        await task
        wal = await watch.fetchval("SELECT $1::pg_lsn - $2::pg_lsn", after["lsn"],
                                   before["lsn"])
        archived = await watch.fetchval("SELECT archived_count FROM pg_stat_archiver")
    return {"load_s": round(wrote_s, 2), "wal_bytes": int(wal),
            "wal_mb_s": round(int(wal) / MB / wrote_s, 1),
            "segments_archived": archived - before["archived_count"],
            "max_ready": max((r for r, _ in samples), default=0),
            "max_oldest_ready_s": round(max((o for _, o in samples), default=0.0), 2),
            "drained_after_load_s": round(drain_s, 2), "drained": drained}


def workdir() -> Path:
    """Under /tmp, open to the PostgreSQL OS user (mkdtemp makes it 0700)."""
    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-backup-", dir="/tmp"))
    root.chmod(0o755)
    return root


async def main(items: int, load_s: float, scattered: bool) -> dict[str, Any]:
    root = workdir()
    try:
        setup = await prepare(root / "home", items)
        s = settings(root / "home")
        base = await basebackup(s, root)
        full = await pgbackrest(s, "full")
        changed = [await change(s, 1, scattered)]
        diff = await pgbackrest(s, "diff")
        changed.append(await change(s, 2, scattered))
        incr = await pgbackrest(s, "incr")
        began = time.perf_counter()
        verified = await backup.verify(s, incr["id"])
        verify_s = round(time.perf_counter() - began, 3)
        async with connection(secret(s.admin_url) or "", s) as conn:
            await conn.execute("INSERT INTO incidents (title, severity) VALUES ('bench', 'P2')")
            moment = await conn.fetchval("SELECT clock_timestamp()")
            await conn.execute("DELETE FROM incidents WHERE title = 'bench'")
        report = await pitr.restore(s, to=root / "restored", target_time=moment)
        await pitr.discard(s, report["node"])
        lag = await archive_lag(s, load_s)
    finally:
        await LocalCluster(settings(root / "home")).down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
    return {
        **setup, "pg_basebackup": base, "full": full, "diff": diff, "incr": incr,
        "rows_changed": changed, "scattered": scattered, "verify_s": verify_s,
        "verified": verified["ok"],
        "restore": {"backup": report["backup_id"], "promoted_s": report["promoted_s"],
                    "verified_s": report["duration_s"], "steps": report["steps"],
                    "ok": report["ok"]},
        "archive_lag": lag, "cpus": os.cpu_count(),
        "all_ok": bool(verified["ok"] and report["ok"] and lag["drained"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--load-s", type=float, default=10.0)
    parser.add_argument("--scattered", action="store_true",
                        help="change every hundredth item, not the newest 1 %%")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main(args.items, args.load_s, args.scattered))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"database {out['database_bytes'] / MB:.0f} MB ({out['rows']})")
        b = out["pg_basebackup"]
        print(f"  pg_basebackup: {b['s']:.2f} s, {b['data_bytes'] / MB:.0f} MB of data -> "
              f"{b['written_bytes'] / MB:.1f} MB written, {b['mb_s']} MB/s")
        for kind in ("full", "diff", "incr"):
            r = out[kind]
            print(f"  pgBackRest {kind} ({r['type']}): {r['s']:.2f} s, "
                  f"{r['changed_bytes'] / MB:.1f} MB copied of {r['data_bytes'] / MB:.0f} MB "
                  f"-> {r['written_bytes'] / MB:.1f} MB written, {r['mb_s']} MB/s")
        print(f"  verify: {out['verify_s']:.2f} s ({out['verified']})")
        r = out["restore"]
        print(f"  restore to a time: promoted after {r['promoted_s']:.2f} s, verified after "
              f"{r['verified_s']:.2f} s; steps {r['steps']}")
        print(f"  archive under load: {out['archive_lag']}")
    sys.exit(0 if out["all_ok"] else 1)
