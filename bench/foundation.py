"""Foundation timings: cluster up (cold, from a template, adopting, restarting), migrations,
and the full catalog load (first and idempotent reload).

    .venv/bin/python -m bench.foundation [--runs 3] [--json]

Each figure is the median of --runs runs on a fresh cluster home under /tmp; everything
started is stopped by PID and deleted.
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

from cardmint.catalog.load import load_catalog
from cardmint.cluster.local.engine import LocalCluster
from cardmint.cluster.state import with_topology
from cardmint.config import Settings, secret
from cardmint.db import migrate
from cardmint.db.connect import connection


def settings(home: Path, **kw: object) -> Settings:
    return with_topology(Settings(_env_file=None, home=home, **kw))  # type: ignore[call-arg]


async def timed(coro) -> float:
    began = time.perf_counter()
    await coro
    return time.perf_counter() - began


async def one_run(root: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    cold = LocalCluster(settings(root / "cold"))
    out["cluster up, cold (initdb, 1 replica)"] = await timed(cold.up())
    out["cluster up, adopting a running cluster"] = await timed(cold.up())
    await cold.down()
    out["cluster up, restarting a stopped cluster"] = await timed(cold.up())

    s = settings(root / "cold")
    began = time.perf_counter()
    await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
    out["db upgrade (empty to head)"] = time.perf_counter() - began
    async with connection(secret(s.migration_url), s) as conn:
        out["catalog load, full (21,066 cards)"] = await timed(load_catalog(conn))
        out["catalog load, full reload (no changes)"] = await timed(load_catalog(conn))
    await cold.down(purge=True)

    template = root / "template"
    warm = LocalCluster(settings(root / "warm"), template=template)
    began = time.perf_counter()
    await asyncio.to_thread(_make_template, warm, template)
    out["template initdb (once)"] = time.perf_counter() - began
    out["cluster up, from a template copy"] = await timed(warm.up())
    await warm.down(purge=True)
    shutil.rmtree(template, ignore_errors=True)
    return out


def _make_template(cluster: LocalCluster, template: Path) -> None:
    from cardmint.cluster.pg import pgbin, process
    from cardmint.cluster.pg.nodes import make_template

    make_template(pgbin.find(), process.OsUser.resolve(cluster.settings.pg_os_user), template)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="cardmint-bench-", dir="/tmp"))
        root.chmod(0o755)
        try:
            runs.append(asyncio.run(one_run(root)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    result = {"benchmark": "foundation", "runs": args.runs, "median_s": medians,
              "machine": {"cores": os.cpu_count(), "postgres": _pg_version()}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, medians))
        for name, value in medians.items():
            print(f"{name:<{width}}  {value:8.3f} s")
    return 0


def _pg_version() -> str:
    from cardmint.cluster.pg import pgbin

    try:
        return pgbin.find().version
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
