"""The three-host lab's failures, timed: median of several runs of each.

    .venv/bin/python -m bench.lab [--runs 3] [--json]
    .venv/bin/python -m bench.lab --async --only leader [--runs 3]   # what async loses

One lab (`cardmint lab up --hosts 3`, synchronous mode) under a fresh directory in /tmp,
with the lab's writer (every acknowledged write recorded) and never-two-primaries checker
running throughout. In turn, `--runs` times each: the leader's host partitioned and
healed, the synchronous standby's host partitioned and healed, the whole cluster
restarted; and once the etcd quorum lost for 25 s. Needs root (network namespaces) and
`make patroni`. The lab is torn down (by PID, namespaces by name) at the end, also after
a failure.
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
from pathlib import Path
from typing import Any

from cardmint.config import Settings
from cardmint.ops.lab import lab as labs
from cardmint.ops.lab import scenarios
from cardmint.ops.lab.watch import Checker, Writer, prepare


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, int | float)
            and not isinstance(v, bool)]
    return {k: {"median": round(statistics.median(r[k] for r in rows), 3),
                "min": min(r[k] for r in rows), "max": max(r[k] for r in rows)} for k in keys}


async def main(runs: int, *, sync: bool = True, only: str | None = None) -> dict[str, Any]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    etcd = shutil.which(settings.etcd) or "etcd"
    patroni = settings.patroni_bin / "patroni"
    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-lab-"))
    os.chmod(root, 0o755)
    home = root / "lab"
    out: dict[str, Any] = {}
    try:
        labs.sweep()
        lab = await labs.up(settings, home, count=3, sync=sync)
        await prepare(lab)
        writer, checker = Writer(lab), Checker(lab)
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(checker.run())]
        try:
            leader = [(await scenarios.partition_leader(lab, writer, checker)).to_dict()
                      for _ in range(runs)]
            out = {"runs": runs, "sync": sync,
                   "leader_partition": {"runs": leader, "medians": medians(leader)}}
            if only != "leader":
                replica = [(await scenarios.partition_replica(lab, writer)).to_dict()
                           for _ in range(runs)]
                quorum = await scenarios.lose_quorum(lab, writer, etcd, watch_s=25)
                restart = [(await scenarios.restart_all(lab, writer, patroni, etcd)).to_dict()
                           for _ in range(runs)]
                out.update({"replica_partition": {"runs": replica, "medians": medians(replica)},
                            "quorum_loss": quorum.to_dict(),
                            "restart": {"runs": restart, "medians": medians(restart)}})
        finally:
            writer.stop()
            checker.stop()
            await asyncio.gather(*tasks)
        out.update({"acknowledged_writes": len(writer.acks),
                    "two_primaries_moments": len(checker.violations),
                    "checker_rounds": checker.rounds})
    finally:
        await labs.down(home)
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--async", dest="asynchronous", action="store_true",
                        help="asynchronous replication (default: synchronous_mode)")
    parser.add_argument("--only", choices=["leader"], help="only the leader's partition")
    args = parser.parse_args()
    result = asyncio.run(main(args.runs, sync=not args.asynchronous, only=args.only))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        for name in ("leader_partition", "replica_partition", "restart"):
            if name in result:
                print(name, json.dumps(result[name]["medians"]))
        if "quorum_loss" in result:
            print("quorum_loss", json.dumps(result["quorum_loss"]))
        print("acknowledged writes", result["acknowledged_writes"], "two-primaries moments",
              result["two_primaries_moments"], "checker rounds", result["checker_rounds"])
