"""What the built-in monitor reads from one of its samples for each rule (`rules.py`).

A sample is the dict `sample.collect_sample` makes. Each function returns the sample's
readings for one quantity, one per node it concerns (or one with no node for the
cluster or the application): the value a rule compares with its threshold, and the
facts its message names. Missing figures give no reading, so they never fire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Sample = dict[str, Any]

# Rows read and written are counted in the application's tables only: the monitor's own
# bookkeeping is not the workload's read/write mix.
OWN_TABLES = ("monitor_samples", "alerts", "incidents", "incident_events")
# A read/write ratio over a handful of rows (the monitor's own probe, a quiet hour)
# says nothing about the workload: judge it only over this many rows.
MIN_RATIO_ROWS = 1000


@dataclass(frozen=True)
class Reading:
    node: str | None
    value: float
    facts: dict[str, Any] = field(default_factory=dict)  # for the message


def _nodes(sample: Sample) -> dict[str, dict[str, Any]]:
    return sample.get("nodes") or {}


def _reachable(sample: Sample) -> dict[str, dict[str, Any]]:
    return {n: f for n, f in _nodes(sample).items() if f.get("reachable")}


def primaries(sample: Sample) -> list[Reading]:
    """How many nodes answer as the primary (none when no node is known)."""
    nodes = _nodes(sample)
    if not nodes:
        return []
    found = [n for n, f in _reachable(sample).items() if f.get("role") == "primary"]
    down = [n for n, f in nodes.items() if not f.get("reachable")]
    detail = f"unreachable: {', '.join(down)}" if down else "every node is in recovery"
    return [Reading(None, float(len(found)), {"names": ", ".join(found), "detail": detail})]


def node_up(sample: Sample) -> list[Reading]:
    return [Reading(n, 1.0 if f.get("reachable") else 0.0,
                    {"error": f.get("error") or "no reply"})
            for n, f in _nodes(sample).items()]


def application_up(sample: Sample) -> list[Reading]:
    """Whether the application's DSN reached the primary (no reading without a probe)."""
    app = sample.get("app") or {}
    if app.get("reachable") is None:
        return []
    return [Reading(None, 1.0 if app["reachable"] else 0.0,
                    {"error": app.get("error") or "no reply"})]


def probe_p95_ms(sample: Sample) -> list[Reading]:
    p95 = sample.get("latency_p95_ms")
    return [] if p95 is None else [Reading(sample.get("primary"), float(p95))]


def pool_utilization_pct(sample: Sample) -> list[Reading]:
    """The busiest application process's pool: connections in use over its maximum."""
    pct = sample.get("pool_utilization_pct")
    if pct is None:
        return []
    pool = sample.get("pool") or {}
    return [Reading(sample.get("primary"), float(pct),
                    {"busiest": pool.get("busiest"), "busy": pool.get("busy"),
                     "pool_max": pool.get("pool_max")})]


def replica_lag_s(sample: Sample) -> list[Reading]:
    return [Reading(n, float(f["lag_s"]), {"lag_bytes": f.get("lag_bytes") or 0})
            for n, f in _reachable(sample).items()
            if f.get("role") == "replica" and f.get("lag_s") is not None]


def storage_pct(sample: Sample) -> list[Reading]:
    return [Reading(n, float(f["storage_pct"])) for n, f in _reachable(sample).items()
            if f.get("storage_pct") is not None]


def connections(sample: Sample) -> list[Reading]:
    return [Reading(n, float(f["connections"])) for n, f in _reachable(sample).items()
            if f.get("connections") is not None]


def read_write_ratio(sample: Sample) -> list[Reading]:
    """Rows read per row written in the application's tables on the primary since the
    previous sample, over at least MIN_RATIO_ROWS rows (no writes count as one)."""
    rw = sample.get("read_write") or {}
    reads, writes = rw.get("reads"), rw.get("writes")
    if reads is None or writes is None or reads + writes < MIN_RATIO_ROWS:
        return []
    return [Reading(sample.get("primary"), reads / max(writes, 1),
                    {"reads": reads, "writes": writes, "window_s": rw.get("window_s")})]


def host_cpu_pct(sample: Sample) -> list[Reading]:
    host = sample.get("host") or {}
    cpu = host.get("cpu_pct")
    return [] if cpu is None else [Reading(host.get("name"), float(cpu))]


def host_memory_pct(sample: Sample) -> list[Reading]:
    host = sample.get("host") or {}
    memory = host.get("memory_pct")
    return [] if memory is None else [Reading(host.get("name"), float(memory))]
