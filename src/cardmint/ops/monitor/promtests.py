"""Synthetic series that put each alert's PromQL over its threshold, then back under:
the input of the `promtool test rules` file (`prometheus.py`). They are made from the
settings' thresholds, so the tests follow a changed threshold as the rules do.

A series is a gauge (its value each minute) or a counter (its increase each minute), in
a bad phase then a good one; `value` is what the alert's expression gives in the bad
phase, which its summary shows.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from cardmint.config import Settings
from cardmint.db.latency import BOUNDS
from cardmint.ops.monitor.readings import OWN_TABLES
from cardmint.ops.monitor.rules import Rule

SERVER = 'instance="cardmint:8000",job="cardmint"'


@dataclass(frozen=True)
class Series:
    selector: str
    bad: float | None  # None: absent in that phase
    good: float | None
    counter: bool = False


@dataclass(frozen=True)
class Case:
    series: list[Series]
    labels: dict[str, str]  # the alert's labels besides severity and rule
    value: float  # the expression's value in the bad phase


def bad_value(rule: Rule, s: Settings, *, beyond: bool = False) -> float:
    """A value that holds the condition (`beyond`: one past a warning band's top)."""
    t, upper = rule.threshold_of(s), rule.upper_of(s)
    if beyond and upper is not None:
        t, upper = upper, None
    if upper is not None:
        return (t + upper) / 2
    if rule.unit == "%":
        return (t + 100) / 2
    return t * 1.2 + 1


def _up_primaries(two: bool) -> Case:
    """Both nodes answer; node1 is a primary, node2 too when `two` (else a replica)."""
    return Case([Series('pg_up{node="node1"}', 1, 1), Series('pg_up{node="node2"}', 1, 1),
                 Series('pg_replication_is_replica{node="node1"}', 0, 0),
                 Series('pg_replication_is_replica{node="node2"}', 0 if two else 1, 1)],
                {}, 2.0)


def _no_primary(rule: Rule, s: Settings, v: float) -> Case:
    # node1 (the primary) stops answering, so its role is not reported; then it is back
    return Case([Series('pg_up{node="node1"}', 0, 1), Series('pg_up{node="node2"}', 1, 1),
                 Series('pg_replication_is_replica{node="node1"}', None, 0),
                 Series('pg_replication_is_replica{node="node2"}', 1, 1)], {}, 0.0)


def _database_unreachable(rule: Rule, s: Settings, v: float) -> Case:
    return Case([Series(f"cardmint_database_up{{{SERVER}}}", 0, 1)],
                {"instance": "cardmint:8000", "job": "cardmint"}, 0.0)


def _node_unreachable(rule: Rule, s: Settings, v: float) -> Case:
    return Case([Series('pg_up{node="node1"}', 1, 1), Series('pg_up{node="node2"}', 0, 1)],
                {"node": "node2"}, 0.0)


def _latency(rule: Rule, s: Settings, v: float) -> Case:
    """All queries in the bucket just above the threshold (its lower bound at or over
    it), then all under a millisecond: 95 % of a bucket's width into it is the p95."""
    low = bisect_left(BOUNDS, rule.threshold_of(s) / 1000)
    series = []
    for i, bound in enumerate([*BOUNDS, float("inf")]):
        le = "+Inf" if bound == float("inf") else repr(bound)
        series.append(Series(
            f'cardmint_db_query_duration_seconds_bucket{{target="primary",le="{le}",{SERVER}}}',
            600.0 if i > low else 0.0, 600.0, counter=True))
    if low + 1 < len(BOUNDS):
        value = (BOUNDS[low] + 0.95 * (BOUNDS[low + 1] - BOUNDS[low])) * 1000
    else:  # in the +Inf bucket Prometheus answers the highest bound: never over it
        value = BOUNDS[-1] * 1000
    return Case(series, {}, value)


def _cpu(rule: Rule, s: Settings, v: float) -> Case:
    busy, quiet = v / 100, 0.2
    labels = f'host="db1",{SERVER}'
    return Case([
        Series(f'cardmint_host_cpu_seconds_total{{mode="user",{labels}}}', 60 * busy,
               60 * quiet, counter=True),
        Series(f'cardmint_host_cpu_seconds_total{{mode="idle",{labels}}}', 60 * (1 - busy),
               60 * (1 - quiet), counter=True),
    ], {"host": "db1"}, v)


def _memory(rule: Rule, s: Settings, v: float) -> Case:
    total = 8e9
    return Case([Series(f'cardmint_host_memory_total_bytes{{host="db1",{SERVER}}}', total, total),
                 Series(f'cardmint_host_memory_available_bytes{{host="db1",{SERVER}}}',
                        total * (1 - v / 100), total * 0.8)], {"host": "db1"}, v)


def _pool(rule: Rule, s: Settings, v: float) -> Case:
    labels = f'pool="primary",{SERVER}'
    return Case([Series(f"cardmint_db_pool_connections_max{{{labels}}}", 1000, 1000),
                 Series(f"cardmint_db_pool_connections_in_use{{{labels}}}", v * 10, 10)],
                {"pool": "primary", "instance": "cardmint:8000", "job": "cardmint"}, v)


def _lag(rule: Rule, s: Settings, v: float) -> Case:
    return Case([Series(f'pg_replication_lag_seconds{{node="node1",{SERVER}}}', 0, 0),
                 Series(f'pg_replication_lag_seconds{{node="node2",{SERVER}}}', v, 0.1)],
                {"node": "node2"}, v)


def _storage(rule: Rule, s: Settings, v: float) -> Case:
    gb = 1e9
    return Case([Series(f'cardmint_storage_used_bytes{{node="node1",{SERVER}}}', v * gb, 10 * gb),
                 Series(f'cardmint_storage_free_bytes{{node="node1",{SERVER}}}',
                        (100 - v) * gb, 90 * gb)], {"node": "node1"}, v)


def _connections(rule: Rule, s: Settings, v: float) -> Case:
    def conns(state: str, bad: float, good: float) -> Series:
        return Series(f'cardmint_node_connections{{node="node1",datname="cardmint",'
                      f'state="{state}",{SERVER}}}', bad, good)

    return Case([conns("active", v - 10, 5), conns("idle", 10, 10)], {"node": "node1"}, v)


def _read_write(rule: Rule, s: Settings, v: float) -> Case:
    """node1 (the primary) reads v rows per row written in a table of the application's;
    the monitor's own table, which writes a lot, and the replica's reads do not count."""
    def rows(node: str, table: str, column: str, bad: float, good: float) -> Series:
        return Series(f'pg_stat_user_tables_{column}_total{{node="{node}",datname="cardmint",'
                      f'schemaname="public",relname="{table}",{SERVER}}}', bad, good,
                      counter=True)

    own = OWN_TABLES[0]
    series = [Series(f'pg_replication_is_replica{{node="node1",{SERVER}}}', 0, 0),
              Series(f'pg_replication_is_replica{{node="node2",{SERVER}}}', 1, 1)]
    for node, table, reads, writes in (("node1", "cards", v * 1000, 1000),
                                       ("node1", own, 0, 100_000),
                                       ("node2", "cards", 50_000, 0)):
        series += [rows(node, table, "seq_tup_read", reads / 2, 500),
                   rows(node, table, "idx_tup_fetch", reads / 2, 500),
                   rows(node, table, "n_tup_ins", writes / 2, 500 if writes else 0),
                   rows(node, table, "n_tup_upd", writes / 4, 250 if writes else 0),
                   rows(node, table, "n_tup_del", writes / 4, 250 if writes else 0)]
    return Case(series, {"node": "node1"}, v)


_CASES: dict[str, Callable[[Rule, Settings, float], Case]] = {
    "no_primary": _no_primary,
    "multiple_primaries": lambda rule, s, v: _up_primaries(True),
    "database_unreachable": _database_unreachable,
    "node_unreachable": _node_unreachable,
    "latency_p95": _latency,
    "latency_p95_sustained": _latency,
    "cpu_sustained": _cpu,
    "memory_sustained": _memory,
    "pool_utilization": _pool,
    "pool_utilization_warn": _pool,
    "replica_lag": _lag,
    "replica_lag_warn": _lag,
    "storage": _storage,
    "storage_warn": _storage,
    "connections": _connections,
    "read_write_ratio": _read_write,
}
COVERED = frozenset(_CASES)


def case(rule: Rule, s: Settings, *, beyond: bool = False) -> Case:
    """The synthetic series for `rule` (KeyError for a rule without a case: a test
    keeps COVERED equal to the rules)."""
    return _CASES[rule.name](rule, s, bad_value(rule, s, beyond=beyond))
