"""The runbook's alert conditions as pure functions of a window of samples and `now`.

A sample is the dict `monitor.collect_sample` makes, with `taken_at` an aware datetime.
A sustained rule fires only when gap-free samples cover its whole duration and every one
of them is over the threshold: a gap longer than `max_gap_s` or one good sample starts the
count again. An instantaneous rule judges the latest sample. Nothing here does I/O, so
every rule is tested with a made-up window and clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from cardmint.config import Settings
from cardmint.ops.incidents.severity import SEVERITIES

Sample = dict[str, Any]
Key = tuple[str, str | None]  # (rule name, node): one firing alert each

P0, P1, P2 = (SEVERITIES[code].code for code in ("P0", "P1", "P2"))
_SEVERITY_RANK = {None: 0, P2: 1, P1: 2, P0: 3}

# A read/write ratio over a handful of rows (the monitor's own probe, a quiet hour)
# says nothing about the workload: judge it only over this many rows.
MIN_RATIO_ROWS = 1000


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    condition: str  # for people: what makes it fire
    runbook_section: str
    recommendation: str


@dataclass(frozen=True)
class Finding:
    name: str
    node: str | None
    severity: str
    message: str
    value: float | None
    threshold: float | None
    runbook_section: str
    recommendation: str

    @property
    def key(self) -> Key:
        return (self.name, self.node)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CONNECTION_FAILURES = "Emergency Procedures › Database Connection Failures"
_VERTICAL = "Scaling Procedures › Vertical Scaling"
_POOL_SCALING = "Scaling Procedures › Connection Pool Scaling"

RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("no_primary", P0, "no reachable node answers as the primary",
         _CONNECTION_FAILURES,
         "If the primary is down, fail over to the replica (`cardmint cluster failover`); "
         "if every node is down, escalate to the platform."),
    Rule("multiple_primaries", P0, "more than one node answers as the primary",
         "Emergency Procedures › Data Loss / Corruption",
         "Stop writes to all but one primary, then rejoin the others "
         "(`cardmint cluster rejoin`) and assess lost writes."),
    Rule("database_unreachable", P0, "the application's DSN cannot reach the primary",
         _CONNECTION_FAILURES,
         "Check the cluster (`cardmint cluster status`) and the application's "
         "DATABASE_URL; fail over if the primary is down."),
    Rule("node_unreachable", P1, "a node does not answer", _CONNECTION_FAILURES,
         "Check the node's server and log (`cardmint cluster status`); high availability "
         "is lost until it is back."),
    Rule("latency_p95", P1, "probe p95 over latency_p95_critical_ms",
         "Emergency Procedures › High Latency (>150ms)",
         "Look at active connections and slow queries (`cardmint stats`); scale up if CPU "
         "is over 80 %; add connection pooling if connections are over 50."),
    Rule("latency_p95_sustained", P1,
         "probe p95 over scale_latency_p95_ms for scale_latency_for_min", _VERTICAL,
         "Scale up the primary once slow queries are ruled out (`cardmint stats`)."),
    Rule("cpu_sustained", P2, "CPU over scale_cpu_pct for scale_cpu_for_min", _VERTICAL,
         "Scale up the machine (a larger VM size)."),
    Rule("memory_sustained", P2, "memory over scale_memory_pct for scale_memory_for_min",
         _VERTICAL, "Scale up the machine (more memory)."),
    Rule("pool_utilization", P1, "busiest application pool over pool_utilization_critical_pct",
         _POOL_SCALING,
         "Find what holds connections (`cardmint stats`); raise CARDMINT_POOL_MAX within "
         "max_connections or add PgBouncer."),
    Rule("replica_lag", P1, "replica replay lag over replica_lag_critical_s",
         "System Overview › Critical Metrics",
         "Check the replica (`cardmint cluster status`): paused replay, a slow disk or the "
         "network; stale-tolerant reads fall back to the primary meanwhile."),
    Rule("storage", P1, "storage used over storage_critical_pct",
         "Emergency Procedures › Storage Full (>90%)",
         "Free space (VACUUM, drop inactive replication slots) or extend the volume before "
         "it reaches 90 %."),
    Rule("connections", P2, "more than pgbouncer_connections connections on a node",
         _POOL_SCALING, "Add PgBouncer in front of the database."),
    Rule("read_write_ratio", P2,
         f"rows read per row written in the application's tables over "
         f"read_replica_read_write_ratio (at least {MIN_RATIO_ROWS} rows in the interval)",
         "Scaling Procedures › Read Replica Addition",
         "Add a read replica and send stale-tolerant reads to it."),
)}
RULE_NAMES = frozenset(RULES)


def _finding(name: str, node: str | None, message: str, value: float | None,
             threshold: float | None) -> Finding:
    rule = RULES[name]
    return Finding(name, node, rule.severity, message,
                   None if value is None else round(float(value), 3), threshold,
                   rule.runbook_section, rule.recommendation)


def _ordered(window: Iterable[Sample], now: datetime) -> list[Sample]:
    """Samples taken at or before `now`, newest first."""
    return sorted((s for s in window if s["taken_at"] <= now), key=lambda s: s["taken_at"],
                  reverse=True)


def latest(window: Iterable[Sample], now: datetime, max_gap_s: float) -> Sample | None:
    """The newest sample, unless it is too old to speak for `now`."""
    ordered = _ordered(window, now)
    if not ordered or (now - ordered[0]["taken_at"]).total_seconds() > max_gap_s:
        return None
    return ordered[0]


def sustained(window: Iterable[Sample], now: datetime, *, minutes: float, threshold: float,
              value: Callable[[Sample], float | None], max_gap_s: float) -> list[float] | None:
    """The values, newest first, if every sample over the last `minutes` is over
    `threshold` and the samples reach back to the start of that span without a gap;
    otherwise None. A missing value counts as not over."""
    start = now - timedelta(minutes=minutes)
    later = now
    values: list[float] = []
    for sample in _ordered(window, now):
        if (later - sample["taken_at"]).total_seconds() > max_gap_s:
            return None
        v = value(sample)
        if v is None or not v > threshold:
            return None
        values.append(v)
        if sample["taken_at"] <= start:
            return values
        later = sample["taken_at"]
    return None  # the samples do not reach back far enough yet


def _nodes(sample: Sample) -> dict[str, dict[str, Any]]:
    return sample.get("nodes") or {}


# -- the rules ------------------------------------------------------------------------


def primary_rules(sample: Sample) -> list[Finding]:
    nodes = _nodes(sample)
    primaries = [n for n, f in nodes.items() if f.get("reachable") and f.get("role") == "primary"]
    out = []
    if nodes and not primaries:
        down = [n for n, f in nodes.items() if not f.get("reachable")]
        detail = f"unreachable: {', '.join(down)}" if down else "every node is in recovery"
        out.append(_finding("no_primary", None, f"no node answers as the primary ({detail})",
                            0, 1))
    elif len(primaries) > 1:
        out.append(_finding("multiple_primaries", None,
                            f"{len(primaries)} nodes answer as the primary: "
                            f"{', '.join(primaries)} (split brain)", len(primaries), 1))
    for name, f in nodes.items():
        if not f.get("reachable"):
            out.append(_finding("node_unreachable", name,
                                f"{name} does not answer: {f.get('error') or 'no reply'}",
                                None, None))
    app = sample.get("app") or {}
    if app.get("reachable") is False:
        out.append(_finding("database_unreachable", None,
                            f"the application cannot reach the primary: "
                            f"{app.get('error') or 'no reply'}", None, None))
    return out


def latency_rule(sample: Sample, settings: Settings) -> list[Finding]:
    p95, limit = sample.get("latency_p95_ms"), settings.latency_p95_critical_ms
    if p95 is None or not p95 > limit:
        return []
    return [_finding("latency_p95", sample.get("primary"),
                     f"probe p95 latency {p95:.1f} ms is over {limit:g} ms", p95, limit)]


def pool_rule(sample: Sample, settings: Settings) -> list[Finding]:
    pct, limit = sample.get("pool_utilization_pct"), settings.pool_utilization_critical_pct
    if pct is None or not pct > limit:
        return []
    pool = sample.get("pool") or {}
    return [_finding("pool_utilization", sample.get("primary"),
                     f"pool utilization {pct:.1f} % is over {limit:g} % (busiest: "
                     f"{pool.get('busiest')}, {pool.get('busy')} of {pool.get('pool_max')})",
                     pct, limit)]


def node_rules(sample: Sample, settings: Settings) -> list[Finding]:
    """Per node: replica lag, storage, and the PgBouncer trigger."""
    out = []
    for name, f in _nodes(sample).items():
        if not f.get("reachable"):
            continue
        lag, lag_limit = f.get("lag_s"), settings.replica_lag_critical_s
        if f.get("role") == "replica" and lag is not None and lag > lag_limit:
            out.append(_finding("replica_lag", name,
                                f"{name} is {lag:.1f} s behind the primary "
                                f"({f.get('lag_bytes') or 0} bytes to replay), over "
                                f"{lag_limit:g} s", lag, lag_limit))
        used, used_limit = f.get("storage_pct"), settings.storage_critical_pct
        if used is not None and used > used_limit:
            out.append(_finding("storage", name,
                                f"{name} storage is {used:.1f} % full, over {used_limit:g} %",
                                used, used_limit))
        conns, conn_limit = f.get("connections"), settings.pgbouncer_connections
        if conns is not None and conns > conn_limit:
            out.append(_finding("connections", name,
                                f"{name} has {conns} connections, over {conn_limit}: "
                                f"time for PgBouncer", conns, conn_limit))
    return out


def read_write_rule(sample: Sample, settings: Settings) -> list[Finding]:
    rw = sample.get("read_write") or {}
    reads, writes = rw.get("reads"), rw.get("writes")
    if reads is None or writes is None or reads + writes < MIN_RATIO_ROWS:
        return []
    ratio, limit = reads / max(writes, 1), settings.read_replica_read_write_ratio
    if not ratio > limit:
        return []
    return [_finding("read_write_ratio", sample.get("primary"),
                     f"{ratio:.1f} rows read per row written ({reads} read, {writes} written "
                     f"over {rw.get('window_s')} s), over {limit:g}:1", ratio, limit)]


def sustained_rules(window: Sequence[Sample], now: datetime, settings: Settings,
                    max_gap_s: float) -> list[Finding]:
    s = settings
    newest = latest(window, now, max_gap_s) or {}
    host = (newest.get("host") or {}).get("name")
    specs = (
        ("latency_p95_sustained", "probe p95 latency", "ms", s.scale_latency_p95_ms,
         s.scale_latency_for_min, newest.get("primary"), lambda x: x.get("latency_p95_ms")),
        ("cpu_sustained", "CPU", "%", s.scale_cpu_pct, s.scale_cpu_for_min, host,
         lambda x: (x.get("host") or {}).get("cpu_pct")),
        ("memory_sustained", "memory in use", "%", s.scale_memory_pct, s.scale_memory_for_min,
         host, lambda x: (x.get("host") or {}).get("memory_pct")),
    )
    out = []
    for name, what, unit, threshold, minutes, node, value in specs:
        values = sustained(window, now, minutes=minutes, threshold=threshold, value=value,
                           max_gap_s=max_gap_s)
        if values:
            out.append(_finding(name, node,
                                f"{what} over {threshold:g} {unit} for {minutes:g} min "
                                f"(now {values[0]:.1f} {unit}, lowest {min(values):.1f})",
                                values[0], threshold))
    return out


def evaluate(window: Sequence[Sample], now: datetime, settings: Settings, *,
             max_gap_s: float) -> list[Finding]:
    """Every condition that holds at `now`: instantaneous rules on the latest sample (if
    it is recent), sustained rules over the window."""
    out = sustained_rules(window, now, settings, max_gap_s)
    sample = latest(window, now, max_gap_s)
    if sample is not None:
        out = [*primary_rules(sample), *latency_rule(sample, settings),
               *pool_rule(sample, settings), *node_rules(sample, settings),
               *read_write_rule(sample, settings), *out]
    return out


@dataclass
class Transitions:
    fired: list[Finding]  # conditions with no firing alert yet
    continuing: list[Finding]  # still firing: update, do not announce again
    resolved: list[Key]  # firing alerts whose condition no longer holds


def transitions(firing: Iterable[Key], findings: Iterable[Finding]) -> Transitions:
    """What changes between the alerts firing now and the conditions that hold now."""
    firing = set(firing)
    current: dict[Key, Finding] = {}
    for f in findings:
        current.setdefault(f.key, f)
    return Transitions(
        fired=[f for k, f in current.items() if k not in firing],
        continuing=[f for k, f in current.items() if k in firing],
        resolved=sorted((k for k in firing if k not in current),
                        key=lambda k: (k[0], k[1] or "")),
    )


def worst_severity(severities: Iterable[str | None]) -> str | None:
    return max(severities, key=lambda s: _SEVERITY_RANK.get(s, 0), default=None)
