"""The runbook's alerts, defined once.

Each `Rule` holds everything about one alert: its severity and runbook section, its
threshold and sustain time (names of settings, so a changed setting changes both
faces), what the built-in monitor reads from its samples (`readings.py`), and the
PromQL that Prometheus evaluates over `/metrics` (`prometheus.py` writes those as a
rules file). The built-in evaluation below and the exported rules are both derived from
this table, so they cannot drift apart.

The built-in evaluation is a pure function of a window of samples and `now`. A
sustained rule fires only when gap-free samples cover its whole duration and every one
of them is over the threshold: a gap longer than `max_gap_s` or one good sample starts
the count again (Prometheus's `for:`). An instantaneous rule judges the latest sample.
Nothing here does I/O, so every rule is tested with a made-up window and clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from string import Template
from typing import Any

from cardmint.config import Settings
from cardmint.ops.incidents.severity import SEVERITIES
from cardmint.ops.monitor import readings as r
from cardmint.ops.monitor.readings import MIN_RATIO_ROWS, OWN_TABLES, Reading, Sample

Key = tuple[str, str | None]  # (rule name, node): one firing alert each

P0, P1, P2 = (SEVERITIES[code].code for code in ("P0", "P1", "P2"))
_SEVERITY_RANK = {None: 0, P2: 1, P1: 2, P0: 3}

# -- PromQL over CardMint's /metrics ----------------------------------------------------
# Several CardMint servers may be scraped, each reporting the whole cluster: expressions
# about a node take the max over them (`max by (node)`). Rates are over RATE_WINDOW.
# The Grafana dashboard (`grafana.py`) charts these same expressions.
RATE_WINDOW = "5m"
_WINDOW_S = 300


def query_latency_ms(q: float) -> str:
    """The q-quantile of the primary's query latency, in milliseconds."""
    return (f"histogram_quantile({q:g}, sum by (le) (rate("
            f'cardmint_db_query_duration_seconds_bucket{{target="primary"}}[{RATE_WINDOW}]'
            "))) * 1000")


P95_MS = query_latency_ms(0.95)
CPU_PCT = ("max by (host) (100 * (1 - sum without (mode) (rate("
           f'cardmint_host_cpu_seconds_total{{mode=~"idle|iowait"}}[{RATE_WINDOW}]))'
           f" / sum without (mode) (rate(cardmint_host_cpu_seconds_total[{RATE_WINDOW}]))))")
MEMORY_PCT = ("max by (host) (100 * (1 - cardmint_host_memory_available_bytes"
              " / cardmint_host_memory_total_bytes))")
POOL_PCT = ('100 * cardmint_db_pool_connections_in_use{pool="primary"}'
            ' / cardmint_db_pool_connections_max{pool="primary"}')
LAG_S = "max by (node) (pg_replication_lag_seconds)"
STORAGE_PCT = ("max by (node) (100 * cardmint_storage_used_bytes"
               " / (cardmint_storage_used_bytes + cardmint_storage_free_bytes))")
CONNECTIONS = "max by (node) (sum without (datname, state) (cardmint_node_connections))"
PRIMARIES = "count(max by (node) (pg_replication_is_replica == 0))"
IS_PRIMARY = "(max by (node) (pg_replication_is_replica) == 0)"


def _table_rows(*columns: str) -> str:
    """Rows per second in the application's tables, per node and scraping server."""
    match = f'{{relname!~"{"|".join(OWN_TABLES)}"}}'
    terms = " + ".join(f"rate(pg_stat_user_tables_{c}_total{match}[{RATE_WINDOW}])"
                       for c in columns)
    return f"sum by (node, instance) ({terms})"


READS = _table_rows("seq_tup_read", "idx_tup_fetch")
WRITES = _table_rows("n_tup_ins", "n_tup_upd", "n_tup_del")
_RATIO = (f"max by (node) (({READS} / {WRITES} > $threshold)"
          f" and (({READS} + {WRITES}) * {_WINDOW_S} >= {MIN_RATIO_ROWS}))"
          f" and on (node) {IS_PRIMARY}")


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    what: str  # the quantity, for people ("replica lag")
    unit: str  # its unit as the monitor and the PromQL both measure it
    threshold: str | float  # a Settings field, or a fixed number
    read: Callable[[Sample], list[Reading]]  # the built-in monitor's reading
    expr: str  # PromQL; $threshold (and $upper) are filled in from the settings
    message: str  # str.format: value, threshold, upper, node, minutes, lowest, **facts
    runbook_section: str
    recommendation: str
    op: str = ">"  # fires when the value is over (">") or under ("<") the threshold
    upper: str | None = None  # a warning band: only up to this (where the alert takes over)
    sustain: str | None = None  # a Settings field in minutes: sustained, else instantaneous
    subject: str | None = None  # the PromQL label naming what it is about (node, host...)
    summary: str | None = None  # the Prometheus summary, when the generic one does not fit

    def threshold_of(self, s: Settings) -> float:
        return float(getattr(s, self.threshold) if isinstance(self.threshold, str)
                     else self.threshold)

    def upper_of(self, s: Settings) -> float | None:
        return None if self.upper is None else float(getattr(s, self.upper))

    def sustain_min(self, s: Settings) -> float | None:
        return None if self.sustain is None else float(getattr(s, self.sustain))

    def holds(self, value: float | None, s: Settings) -> bool:
        """Whether a value puts this rule's condition on (None never does)."""
        if value is None:
            return False
        t, upper = self.threshold_of(s), self.upper_of(s)
        over = value < t if self.op == "<" else value > t
        return over and (upper is None or value <= upper)

    def advice(self, node: str | None, **facts: Any) -> str:
        """The recommendation with the exact command filled in for this node."""
        try:
            return self.recommendation.format(node=node or "NODE", **facts)
        except (KeyError, IndexError):  # a fact this reading lacks: the generic form
            return self.recommendation.replace("{node}", node or "NODE")

    @property
    def prom_advice(self) -> str:
        """The recommendation in Prometheus's template language."""
        return self.recommendation.replace("{node}", "{{ $labels.node }}").replace(
            "{names}", "the primaries")

    def promql(self, s: Settings) -> str:
        upper = self.upper_of(s)
        return Template(self.expr).substitute(threshold=f"{self.threshold_of(s):g}",
                                              upper="" if upper is None else f"{upper:g}")

    @property
    def condition(self) -> str:
        """For people: what makes it fire, naming the settings."""
        op = "under" if self.op == "<" else "over"
        text = f"{self.what} {op} {self.threshold}"
        if self.upper:
            text += f" and up to {self.upper}"
        return text + (f" for {self.sustain}" if self.sustain else "")


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
_HIGH_LATENCY = "Emergency Procedures › High Latency (>150ms)"
_VERTICAL = "Scaling Procedures › Vertical Scaling"
_POOL_SCALING = "Scaling Procedures › Connection Pool Scaling"
_CRITICAL_METRICS = "System Overview › Critical Metrics"
_STORAGE_FULL = "Emergency Procedures › Storage Full (>90%)"
_POOL_MESSAGE = ("pool utilization {value:.1f} % is over {threshold:g} % (busiest: "
                 "{busiest}, {busy} of {pool_max})")
_POOL_ADVICE = ("Find what holds connections: `cardmint stats`; raise CARDMINT_POOL_MAX "
                "within max_connections, or add PgBouncer: `cardmint pooler up`.")
_LAG_MESSAGE = ("{node} is {value:.1f} s behind the primary ({lag_bytes} bytes to replay), "
                "over {threshold:g} s")
_LAG_ADVICE = ("Check the replica: `cardmint cluster status` (paused replay, a slow disk "
               "or the network); if {node} does not catch up, `cardmint cluster rejoin "
               "{node}`. Stale-tolerant reads fall back to the primary meanwhile.")
_SUSTAINED = ("{what} over {threshold:g} {unit} for {minutes:g} min (now {value:.1f} "
              "{unit}, lowest {lowest:.1f})")

RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("no_primary", P0, "nodes answering as the primary", "", 1, r.primaries,
         f"({PRIMARIES} or vector(0)) < $threshold and on () (count(pg_up) > 0)",
         "no node answers as the primary ({detail})", _CONNECTION_FAILURES,
         "Fail over to a replica: `cardmint cluster failover`; if every node is down, "
         "escalate to the platform.", op="<",
         summary="no node answers as the primary"),
    Rule("multiple_primaries", P0, "nodes answering as the primary", "", 1, r.primaries,
         f"{PRIMARIES} > $threshold",
         "{value:g} nodes answer as the primary: {names} (split brain)",
         "Emergency Procedures › Data Loss / Corruption",
         "Stop writes (`cardmint db freeze --reason split-brain`), keep one primary and "
         "rejoin each other one (`cardmint cluster rejoin NODE`, NODE one of {names}); "
         "then `cardmint db thaw` and assess lost writes.",
         summary='{{ $value | printf "%.0f" }} nodes answer as the primary (split brain)'),
    Rule("database_unreachable", P0, "the application reaching the primary", "", 1,
         r.application_up, "cardmint_database_up < $threshold",
         "the application cannot reach the primary: {error}", _CONNECTION_FAILURES,
         "Check the cluster: `cardmint cluster status`; if the primary is down, "
         "`cardmint cluster failover`; else check CARDMINT_DATABASE_URL.", op="<",
         subject="instance",
         summary="{{ $labels.instance }}: the application cannot reach the primary"),
    Rule("node_unreachable", P1, "the node answering", "", 1, r.node_up,
         "max by (node) (pg_up) < $threshold", "{node} does not answer: {error}",
         _CONNECTION_FAILURES,
         "Bring it back: `cardmint cluster rejoin {node}` (for the primary, "
         "`cardmint cluster failover` first); high availability is lost until it is back.",
         op="<", subject="node",
         summary="{{ $labels.node }} does not answer"),
    Rule("latency_p95", P1, "p95 query latency", "ms", "latency_p95_critical_ms",
         r.probe_p95_ms, f"{P95_MS} > $threshold",
         "probe p95 latency {value:.1f} ms is over {threshold:g} ms", _HIGH_LATENCY,
         "Look at active connections and slow queries (`cardmint stats`); scale up if CPU "
         "is over 80 %; add connection pooling if connections are over 50."),
    Rule("latency_p95_sustained", P1, "p95 query latency", "ms", "scale_latency_p95_ms",
         r.probe_p95_ms, f"{P95_MS} > $threshold", _SUSTAINED, _VERTICAL,
         "Scale up the primary once slow queries are ruled out (`cardmint stats`).",
         sustain="scale_latency_for_min"),
    Rule("cpu_sustained", P2, "CPU", "%", "scale_cpu_pct", r.host_cpu_pct,
         f"{CPU_PCT} > $threshold", _SUSTAINED, _VERTICAL,
         "Scale up the machine: `cardmint cluster resize --memory 4GB --cpu 2` (Fly: "
         "`--vm-size`).", sustain="scale_cpu_for_min",
         subject="host"),
    Rule("memory_sustained", P2, "memory in use", "%", "scale_memory_pct",
         r.host_memory_pct, f"{MEMORY_PCT} > $threshold", _SUSTAINED, _VERTICAL,
         "Scale up the machine: `cardmint cluster resize --memory 4GB` (Fly: `--vm-size`).",
         sustain="scale_memory_for_min",
         subject="host"),
    Rule("pool_utilization", P1, "pool utilization", "%", "pool_utilization_critical_pct",
         r.pool_utilization_pct, f"{POOL_PCT} > $threshold", _POOL_MESSAGE,
         _POOL_SCALING, _POOL_ADVICE, subject="instance"),
    Rule("pool_utilization_warn", P2, "pool utilization", "%", "pool_utilization_warn_pct",
         r.pool_utilization_pct, f"{POOL_PCT} > $threshold <= $upper",
         _POOL_MESSAGE + " (the alert is at {upper:g} %)", _POOL_SCALING, _POOL_ADVICE,
         upper="pool_utilization_critical_pct", subject="instance"),
    Rule("replica_lag", P1, "replica lag", "s", "replica_lag_critical_s", r.replica_lag_s,
         f"{LAG_S} > $threshold", _LAG_MESSAGE, _CRITICAL_METRICS, _LAG_ADVICE,
         subject="node"),
    Rule("replica_lag_warn", P2, "replica lag", "s", "replica_lag_warn_s", r.replica_lag_s,
         f"{LAG_S} > $threshold <= $upper", _LAG_MESSAGE + " (the alert is at {upper:g} s)",
         _CRITICAL_METRICS, _LAG_ADVICE, upper="replica_lag_critical_s", subject="node"),
    Rule("storage", P1, "storage used", "%", "storage_critical_pct", r.storage_pct,
         f"{STORAGE_PCT} > $threshold", "{node} storage is {value:.1f} % full, over "
         "{threshold:g} %", _STORAGE_FULL,
         "Free space: `cardmint storage vacuum` (and `cardmint cluster remove-replica NODE` "
         "for an inactive slot's replica), or extend the volume (Fly: `cardmint storage "
         "extend VOL --size-gb N`) before it reaches 90 %.", subject="node"),
    Rule("storage_warn", P2, "storage used", "%", "storage_warn_pct", r.storage_pct,
         f"{STORAGE_PCT} > $threshold <= $upper", "{node} storage is {value:.1f} % full, "
         "over {threshold:g} % (the alert is at {upper:g} %)", _STORAGE_FULL,
         "Plan the space: `cardmint storage` shows what uses it; `cardmint storage vacuum`.",
         upper="storage_critical_pct", subject="node"),
    Rule("connections", P2, "connections", "connections", "pgbouncer_connections",
         r.connections, f"{CONNECTIONS} > $threshold",
         "{node} has {value:g} connections, over {threshold:g}: time for PgBouncer",
         _POOL_SCALING, "Add PgBouncer in front of the database: `cardmint pooler up`.",
         subject="node"),
    Rule("read_write_ratio", P2, "rows read per row written", ":1",
         "read_replica_read_write_ratio", r.read_write_ratio, _RATIO,
         "{value:.1f} rows read per row written ({reads} read, {writes} written over "
         "{window_s} s), over {threshold:g}:1", "Scaling Procedures › Read Replica Addition",
         "Add a read replica and send stale-tolerant reads to it: "
         "`cardmint cluster add-replica`.", subject="node"),
)}
RULE_NAMES = frozenset(RULES)


def _finding(rule: Rule, reading: Reading, s: Settings, **extra: Any) -> Finding:
    threshold, upper = rule.threshold_of(s), rule.upper_of(s)
    message = rule.message.format(value=reading.value, threshold=threshold, upper=upper,
                                  node=reading.node, what=rule.what, unit=rule.unit,
                                  **reading.facts, **extra)
    return Finding(rule.name, reading.node, rule.severity, message,
                   round(float(reading.value), 3), threshold, rule.runbook_section,
                   rule.advice(reading.node, **reading.facts))


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


def sustained(window: Iterable[Sample], now: datetime, *, minutes: float,
              value: Callable[[Sample], float | None], holds: Callable[[float | None], bool],
              max_gap_s: float) -> list[float] | None:
    """The values, newest first, if the condition `holds` for every sample over the last
    `minutes` and the samples reach back to the start of that span without a gap;
    otherwise None. A missing value does not hold."""
    start = now - timedelta(minutes=minutes)
    later = now
    values: list[float] = []
    for sample in _ordered(window, now):
        if (later - sample["taken_at"]).total_seconds() > max_gap_s:
            return None
        v = value(sample)
        if v is None or not holds(v):
            return None
        values.append(v)
        if sample["taken_at"] <= start:
            return values
        later = sample["taken_at"]
    return None  # the samples do not reach back far enough yet


def _value_for(rule: Rule, node: str | None) -> Callable[[Sample], float | None]:
    def value(sample: Sample) -> float | None:
        return next((x.value for x in rule.read(sample) if x.node == node), None)

    return value


def _judge(rule: Rule, window: Sequence[Sample], now: datetime, newest: Sample,
           s: Settings, max_gap_s: float) -> list[Finding]:
    minutes = rule.sustain_min(s)
    out = []
    for reading in rule.read(newest):
        if not rule.holds(reading.value, s):
            continue
        if minutes is None:
            out.append(_finding(rule, reading, s))
            continue
        values = sustained(window, now, minutes=minutes, value=_value_for(rule, reading.node),
                           holds=lambda v: rule.holds(v, s), max_gap_s=max_gap_s)
        if values:
            out.append(_finding(rule, reading, s, minutes=minutes, lowest=min(values)))
    return out


def evaluate(window: Sequence[Sample], now: datetime, settings: Settings, *,
             max_gap_s: float) -> list[Finding]:
    """Every condition that holds at `now`: instantaneous rules on the latest sample (if
    it is recent), sustained rules over the window as well."""
    newest = latest(window, now, max_gap_s)
    if newest is None:
        return []
    return [f for rule in RULES.values()
            for f in _judge(rule, window, now, newest, settings, max_gap_s)]


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
