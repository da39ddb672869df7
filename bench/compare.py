"""Before/after on a loaded machine: several `cardmint serve` configurations side by side,
wrk against each in turn, round after round, so drifting load hits every one alike.

    .venv/bin/python -m bench.compare --home DIR --config 'before|/tmp/old/src|' \\
        --config 'after||--workers 2' [--routes lookup,search] [--seconds 8] [--rounds 3]

A configuration is `name|PYTHONPATH|serve arguments|VAR=value,...`: an empty PYTHONPATH runs this
checkout; another (e.g. `git archive main src | tar -x -C /tmp/old`) runs that code on the
same cluster. Every server runs at once (idle between its turns, background loops off),
each on its own loopback port, stopped by PID at the end. A server is ready when it
answers a card lookup (an older schema's /health/ready may refuse a newer database).
Prints, per route and configuration, the median req/s and p50/p95 over the rounds and the
ratio of each median to the first configuration's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.loadtest import _paths, load, settings
from bench.scale import listing_request
from cardmint.cluster.home import free_ports
from cardmint.db import Database
from cardmint.ops.loadtest import mix, wrk
from cardmint.ops.loadtest.loadgen import Operation
from cardmint.tokens import create_token, revoke_token

READY_S = 60.0


@dataclass
class Config:
    name: str
    src: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def parse_config(text: str) -> Config:
    name, src, args, env = [*text.split("|", 3), "", "", ""][:4]
    pairs = [kv.split("=", 1) for kv in env.split(",") if kv]
    return Config(name, src, shlex.split(args), env={k: v for k, v in pairs})


def start(c: Config, home: Path, log_dir: Path) -> None:
    c.port = free_ports(1)[0]
    env = {**os.environ, "CARDMINT_HOME": str(home), **c.env}
    if c.src:
        env["PYTHONPATH"] = c.src
    argv = [sys.executable, "-m", "cardmint", "serve", "--host", "127.0.0.1", "--port",
            str(c.port), "--home", str(home), "--no-monitor", "--no-worker",
            "--no-sync-guard", *c.args]
    with open(log_dir / f"serve-{c.name}.log", "wb") as log:  # the child keeps its copy
        c.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)


async def wait_ready(c: Config, probe: str) -> None:
    deadline = time.monotonic() + READY_S
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            assert c.proc is not None
            if c.proc.poll() is not None:
                raise SystemExit(f"{c.name}: serve exited {c.proc.returncode}")
            try:
                if (await http.get(f"http://127.0.0.1:{c.port}{probe}")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{c.name}: not ready within {READY_S:.0f} s")


def cpu_s(root: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid == root or int(fields[1]) == root:  # fields[1]: the parent's PID
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_cpu_s(home: Path) -> float:
    """CPU seconds of every PostgreSQL server of the cluster (postmasters and backends)."""
    total = 0.0
    for pidfile in (home / "nodes").glob("*/postmaster.pid"):
        try:
            total += cpu_s(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return total


def stop(c: Config) -> None:
    if c.proc is None or c.proc.poll() is not None:
        return
    c.proc.send_signal(signal.SIGTERM)
    try:
        c.proc.wait(15)
    except subprocess.TimeoutExpired:
        c.proc.kill()
        c.proc.wait()


async def main(home: Path, configs: list[Config], routes: list[str], seconds: int,
               rounds: int, clients: int, log_dir: Path) -> dict[str, Any]:
    for c in configs:
        start(c, home, log_dir)
    try:
        for c in configs:
            await wait_ready(c, "/v1/cards/base1-4")
        base = f"http://127.0.0.1:{configs[0].port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10.0) as http:
            cards = await mix.draw_cards(http, random.Random(7))
        ops = {"lookup": Operation("lookup", 1, mix.lookup_request(cards)),
               "search": Operation("search", 1, mix.search_request(cards))}
        headers: dict[str, dict[str, str]] = {}
        if "listing" in routes:  # bench.scale's inventory listing, with a read token
            db = await Database(settings(home), replica_dsns=[]).open(monitor=False)
            try:
                token, record = await create_token(db, owner="bench-compare", scope="read")
                sets = [r["set_id"] for r in await db.fetch(
                    "SELECT set_id FROM cards GROUP BY 1 HAVING count(*) >= 50 ORDER BY 1")]
            finally:
                await db.close()
            headers["listing"] = {"Authorization": f"Bearer {token}"}
            ops["listing"] = Operation("listing", 1, listing_request(sets, headers["listing"]))
        paths = {r: _paths(ops[r]) for r in routes}
        loads = [load()]
        for c in configs:  # one pass each first: what a server caches is then cached
            for r in routes:
                await wrk.run(f"http://127.0.0.1:{c.port}", connections=clients,
                              duration_s=2, paths=paths[r], headers=headers.get(r))
        for _ in range(rounds):
            for r in routes:
                for c in configs:
                    assert c.proc is not None
                    before, pg_before = cpu_s(c.proc.pid), postgres_cpu_s(home)
                    out = await wrk.run(f"http://127.0.0.1:{c.port}", connections=clients,
                                        duration_s=seconds, paths=paths[r],
                                        headers=headers.get(r))
                    # the server's own CPU per answer: its floor on a core of its own
                    n = max(1, out["requests"])
                    out["cpu_ms"] = round((cpu_s(c.proc.pid) - before) * 1000 / n, 3)
                    out["pg_cpu_ms"] = round((postgres_cpu_s(home) - pg_before) * 1000 / n, 3)
                    c.runs.setdefault(r, []).append(out)
            loads.append(load())
    finally:
        for c in configs:
            stop(c)
        if "listing" in headers:
            db = await Database(settings(home), replica_dsns=[]).open(monitor=False)
            try:
                await revoke_token(db, record["id"])
            finally:
                await db.close()
    table: dict[str, Any] = {}
    for r in routes:
        first = None
        for c in configs:
            runs = c.runs[r]
            med = {k: statistics.median(x.get(k) or 0 for x in runs)
                   for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "cpu_ms", "pg_cpu_ms")}
            med["errors"] = sum(x["errors"] for x in runs)
            med["rps_runs"] = [x["rps"] for x in runs]
            first = first or med
            med["rps_ratio"] = round(med["rps"] / first["rps"], 2) if first["rps"] else None
            med["p95_ratio"] = (round(med["p95_ms"] / first["p95_ms"], 2)
                                if first["p95_ms"] else None)
            table.setdefault(r, {})[c.name] = med
    return {"benchmark": "compare", "seconds": seconds, "rounds": rounds, "clients": clients,
            "loads": loads, "configs": {c.name: {"src": c.src, "args": c.args}
                                        for c in configs}, "results": table}


def render(out: dict[str, Any]) -> None:
    print(f"load averages {out['loads']}; {out['rounds']} rounds x {out['seconds']} s, "
          f"{out['clients']} connections")
    for r, rows in out["results"].items():
        for name, m in rows.items():
            print(f"{r:<7} {name:<14} {m['rps']:>8,.0f} req/s (x{m['rps_ratio']})  p50 "
                  f"{m['p50_ms']} ms  p95 {m['p95_ms']} ms (x{m['p95_ratio']})  p99 "
                  f"{m['p99_ms']} ms  errors {m['errors']}  CPU/req: server {m['cpu_ms']} ms, "
                  f"PostgreSQL {m['pg_cpu_ms']} ms  "
                  f"runs {m['rps_runs']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--routes", default="lookup,search")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--logs", type=Path, default=Path("/tmp"))
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    if not wrk.available():
        raise SystemExit("wrk is missing: `make bench` installs it")
    result = uvloop.run(main(a.home, [parse_config(x) for x in a.config],
                             a.routes.split(","), a.seconds, a.rounds, a.concurrency,
                             a.logs))
    print(json.dumps(result, indent=2, default=str)) if a.json else render(result)
