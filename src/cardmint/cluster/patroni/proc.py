"""The Patroni engine's processes: etcd and one Patroni per member, started as the
PostgreSQL OS user, found by their command line and stopped by PID.

A process is ours when its command line holds, as one argument, a path under the
cluster's home (a member's config file, etcd's data directory): a PID in cluster.json
alone is no proof, it may since belong to another program.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx

from cardmint import inputs
from cardmint.cluster.pg import process
from cardmint.errors import ClusterError

STOP_TIMEOUT_S = 30.0  # Patroni stops its PostgreSQL (fast shutdown) before it exits
ETCD_READY_TIMEOUT_S = 30.0


def find(marker: Path) -> int | None:
    """The live process with `marker` as one of its arguments, if any."""
    want = str(marker).encode()
    for entry in os.listdir("/proc"):
        if not inputs.is_digits(entry):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if want in args and process.alive(int(entry)):
            return int(entry)
    return None


async def terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> str:
    """SIGTERM (Patroni and etcd shut down cleanly on it), then SIGKILL. Returns the
    way it went: "term" or "kill"."""
    return await process.escalate(pid, ((signal.SIGTERM, "term", timeout),
                                        (signal.SIGKILL, "kill", 10.0)), "process")


async def wait_etcd(pid: int, client_port: int, log: Path,
                    timeout: float = ETCD_READY_TIMEOUT_S) -> None:
    """Until etcd says it is healthy (it has a leader: itself)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if not process.alive(pid):
                raise ClusterError(f"etcd exited while starting: {process.tail(log)}")
            try:
                answer = await client.get(f"http://127.0.0.1:{client_port}/health")
                if answer.status_code == 200 and answer.json().get("health") == "true":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"etcd not healthy after {timeout:.0f} s: "
                                   f"{process.tail(log)}")
            await asyncio.sleep(0.05)
