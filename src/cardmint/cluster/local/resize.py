"""Vertical scaling of the local cluster (`cardmint cluster resize`): settings derived from the
machine's memory and CPUs, written to each node's `cardmint-resources.conf`, applied by a
rolling restart that costs the application one switchover-level write outage.

Order: every replica is restarted first (stop by PID, start, wait streaming), then a
switchover promotes an already-resized replica and rejoins the old primary, which starts
with the new settings too. Raising max_worker_processes needs exactly this order (a hot
standby refuses to run with less than its primary). We do not switch back: a second
switchover would double the outage to restore a node *name*, and every DSN and
`cluster.json` follow roles, not names.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from cardmint.cluster.pg import nodes, process
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import SUPERUSER, Node, save
from cardmint.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

KB = 1024
MIN_MEMORY_KB = 256 * KB  # below this the derived shared_buffers is smaller than a laptop's
MAX_CPU = 256
MEMORY_SETTINGS = ("shared_buffers", "effective_cache_size", "work_mem",
                   "maintenance_work_mem")
CPU_SETTINGS = ("max_worker_processes", "max_parallel_workers",
                "max_parallel_workers_per_gather", "max_parallel_maintenance_workers")
PROBE_INTERVAL_S = 0.01

_UNITS = {"k": 1, "kb": 1, "m": KB, "mb": KB, "g": KB * KB, "gb": KB * KB,
          "t": KB ** 3, "tb": KB ** 3}


def parse_memory(text: str) -> int:
    """`512MB`, `2GB`, `1.5G`, `4096M` -> kB. A bare number is MB (what people mean)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?\s*", text.lower())
    if not m:
        raise UsageError(f"--memory {text!r}: give a size such as 512MB, 4GB or 1.5G")
    unit = (m.group(2) or "mb").replace("i", "")
    return int(float(m.group(1)) * _UNITS[unit])


def format_kb(kb: int) -> str:
    """As PostgreSQL's SHOW prints a size: the largest unit that states it exactly."""
    for unit, size in (("TB", KB ** 3), ("GB", KB * KB), ("MB", KB)):
        if kb % size == 0:
            return f"{kb // size}{unit}"
    return f"{kb}kB"


def derive(memory_kb: int, cpu: int | None, max_connections: int) -> dict[str, str]:
    """The settings for a node with `memory_kb` of RAM (and `cpu` cores when given).

    shared_buffers 25 % and effective_cache_size 75 % (the runbook's figures);
    work_mem shares what shared_buffers leaves among every connection running three sorts
    or hashes at once; maintenance_work_mem 1/16 of memory, at most 2 GB (VACUUM and
    CREATE INDEX gain nothing beyond that)."""
    if memory_kb < MIN_MEMORY_KB:
        raise UsageError(f"--memory must be at least {format_kb(MIN_MEMORY_KB)}")
    if max_connections < 1:
        raise ValueError("max_connections must be positive")
    shared = memory_kb // 4 // 8 * 8  # whole 8 kB pages
    out = {
        "shared_buffers": format_kb(shared),
        "effective_cache_size": format_kb(memory_kb * 3 // 4),
        "work_mem": format_kb(max(64, (memory_kb - shared) // (3 * max_connections))),
        "maintenance_work_mem": format_kb(max(KB, min(2 * KB * KB, memory_kb // 16))),
    }
    if cpu is not None:
        if not 1 <= cpu <= MAX_CPU:
            raise UsageError(f"--cpu must be between 1 and {MAX_CPU}")
        per_gather = max(1, min(4, cpu // 2))
        out |= {
            # room for parallel workers plus background workers; PostgreSQL's default is 8
            "max_worker_processes": str(max(8, cpu + 4)),
            "max_parallel_workers": str(cpu),
            "max_parallel_workers_per_gather": str(per_gather),
            "max_parallel_maintenance_workers": str(per_gather),
        }
    return out


def render_conf(values: dict[str, str], memory: str, cpu: int | None) -> str:
    head = (f"# Written by `cardmint cluster resize --memory {memory}"
            f"{f' --cpu {cpu}' if cpu is not None else ''}`; included last in "
            "postgresql.conf.\n")
    return head + "".join(f"{k} = {nodes.conf_string(v)}\n" for k, v in values.items())


def read_conf(path: Path) -> dict[str, str]:
    """The settings of an existing resources file (`name = 'value'` lines)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*(\w+)\s*=\s*'([^']*)'\s*", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def total_memory_kb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class NodeChange:
    node: str
    role_before: str
    role_after: str
    restarted_by: str  # rolling restart | switchover + rejoin | restart in place
    changed: dict[str, list[str | None]] = field(default_factory=dict)  # name: [before, after]


@dataclass
class ResizeReport:
    memory: str
    cpu: int | None
    settings: dict[str, str]
    nodes: list[NodeChange]
    primary_before: str
    primary_after: str
    write_outage_s: float | None  # longest gap between acknowledged probe writes
    probe_writes: int
    probe_failures: int
    switchover: dict[str, Any] | None
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WriteProbe:
    """`SELECT txid_current()` on whichever node is read-write, every PROBE_INTERVAL_S: it
    needs no table and fails on a standby, so its gaps are the write outage."""

    def __init__(self, dsn: str, password: str) -> None:
        self.dsn, self.password = dsn, password
        self.acks: list[float] = []
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = await asyncpg.connect(self.dsn, password=self.password, timeout=2,
                                                 server_settings={
                                                     "application_name": "cardmint-resize"})
                await conn.fetchval("SELECT txid_current()", timeout=2)
                self.acks.append(time.monotonic())
            except Exception:  # any failure is an unacknowledged write
                self.failures += 1
                if conn is not None:
                    conn.terminate()
                    conn = None
            await asyncio.sleep(PROBE_INTERVAL_S)
        if conn is not None:
            conn.terminate()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def longest_gap(self, since: float) -> float | None:
        times = [t for t in self.acks if t >= since]
        if len(times) < 2:
            return None
        return round(max(b - a for a, b in pairwise(times)), 4)


async def _show(cluster: LocalCluster, node: Node, names: tuple[str, ...]) -> dict[str, str]:
    conn = await cluster.admin.connect(node, "postgres", timeout=5)
    try:
        rows = await conn.fetch("SELECT name, current_setting(name) AS v FROM pg_settings "
                                "WHERE name = ANY($1::text[])", list(names))
    finally:
        await conn.close()
    return {r["name"]: r["v"] for r in rows}


def _write(user: OsUser, node: Node, text: str) -> None:
    datadir = Path(node.datadir)
    nodes.write(user, datadir / nodes.RESOURCES_CONF, text)
    nodes.include_resources(user, datadir)  # nodes configured before resize existed


async def _restart(cluster: LocalCluster, pg: PgBin, user: OsUser, node: Node) -> None:
    pid = process.postmaster_pid(Path(node.datadir))
    if pid is None:
        raise ClusterError(f"{node.name} is not running: start it (`cardmint cluster up`) "
                           "before a resize")
    await process.stop(pid)
    node.pid = await cluster.start_node(pg, user, node)


async def resize(cluster: LocalCluster, memory: str, cpu: int | None = None) -> ResizeReport:
    """Apply memory- and CPU-derived settings to every node by a rolling restart."""
    began = time.monotonic()
    memory_kb = parse_memory(memory)
    machine = total_memory_kb()
    if machine is not None and memory_kb > machine:
        raise UsageError(f"--memory {memory} is more than this machine has "
                         f"({format_kb(machine)}); the local nodes share it")
    state = cluster.ready_state()
    if any(n.role not in ("primary", "replica") for n in state.nodes):
        raise ClusterError("a node is fenced: `cardmint cluster rejoin` it before a resize")
    primary = state.primary
    names = MEMORY_SETTINGS + CPU_SETTINGS
    before = {n.name: await _show(cluster, n, names) for n in state.nodes}
    max_conn = int((await _show(cluster, primary, ("max_connections",)))["max_connections"])
    values = derive(memory_kb, cpu, max_conn)
    if cpu is None:  # keep CPU settings an earlier resize wrote
        kept = read_conf(Path(primary.datadir) / nodes.RESOURCES_CONF)
        values |= {k: v for k, v in kept.items() if k in CPU_SETTINGS}
    workers = int(values.get("max_worker_processes", before[primary.name][
        "max_worker_processes"]))
    if workers < int(before[primary.name]["max_worker_processes"]):
        # a standby restarted with fewer than its primary refuses hot standby
        raise UsageError("lowering max_worker_processes needs the primary restarted first; "
                         f"give --cpu {int(before[primary.name]['max_worker_processes']) - 4} "
                         "or more")
    text = render_conf(values, memory, cpu)
    user = OsUser.resolve(cluster.settings.pg_os_user)
    pg = PgBin(Path(state.bindir), state.pg_version)
    passwords = cluster.admin.passwords()
    probe = WriteProbe(state.dsn(SUPERUSER, attrs="read-write"), passwords[SUPERUSER])
    probe.start()
    changes = {n.name: NodeChange(n.name, n.role, n.role, "rolling restart")
               for n in state.nodes}
    switch: dict[str, Any] | None = None
    try:
        with cluster.lock():
            for node in state.nodes:
                _write(user, node, text)
            for node in state.replicas:
                await _restart(cluster, pg, user, node)
                await cluster.wait_streaming(state)
            if not state.replicas:  # nothing to switch to: the outage is a restart
                await _restart(cluster, pg, user, primary)
                changes[primary.name].restarted_by = "restart in place"
            save(state)
        if state.replicas:
            report = await cluster.switchover()
            switch = report.to_dict()
            changes[report.old_primary].restarted_by = "switchover + rejoin"
        await probe_until_ack(probe)
    finally:
        await probe.stop()
    state = cluster.ready_state()
    for node in state.nodes:
        after = await _show(cluster, node, names)
        change = changes[node.name]
        change.role_after = node.role
        change.changed = {k: [before[node.name].get(k), after.get(k)] for k in names
                          if before[node.name].get(k) != after.get(k)}
        missing = {k: after.get(k) for k in values if after.get(k) != values[k]}
        if missing:
            raise ClusterError(f"{node.name} restarted without the new settings: {missing}")
    return ResizeReport(
        memory=format_kb(memory_kb), cpu=cpu, settings=values, nodes=list(changes.values()),
        primary_before=primary.name, primary_after=state.primary.name,
        write_outage_s=probe.longest_gap(began), probe_writes=len(probe.acks),
        probe_failures=probe.failures, switchover=switch,
        duration_s=round(time.monotonic() - began, 3))


async def probe_until_ack(probe: WriteProbe, timeout: float = 30.0) -> None:
    """One acknowledged probe write after the last restart, so the gap is measured whole."""
    count = len(probe.acks)
    deadline = time.monotonic() + timeout
    while len(probe.acks) <= count:
        if time.monotonic() > deadline:
            raise ClusterError(f"no write succeeded within {timeout:.0f} s of the resize")
        await asyncio.sleep(PROBE_INTERVAL_S)
