"""The alert rules as pure functions of a window of samples and an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cardmint.config import Settings
from cardmint.ops.monitor import rules
from cardmint.ops.monitor.rules import Finding, evaluate, transitions

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
GAP = 150.0  # 2.5 intervals of 60 s
SETTINGS = Settings(_env_file=None, home="/nonexistent")  # type: ignore[call-arg]


def healthy(at: datetime, **changes: Any) -> dict[str, Any]:
    """A sample of a quiet, healthy two-node cluster; `changes` override top-level keys."""
    sample = {
        "taken_at": at,
        "app": {"reachable": True, "error": None},
        "primary": "node1",
        "nodes": {
            "node1": {"reachable": True, "role": "primary", "lag_s": None, "connections": 12,
                      "storage_pct": 24.0},
            "node2": {"reachable": True, "role": "replica", "lag_s": 0.0, "lag_bytes": 0,
                      "connections": 5, "storage_pct": 24.0},
        },
        "latency_p95_ms": 3.0,
        "pool": {"pool_max": 20, "busiest": "cardmint/1", "busy": 1},
        "pool_utilization_pct": 5.0,
        "host": {"name": "db1", "cpu_pct": 20.0, "memory_pct": 40.0},
        "read_write": {"reads": 100, "writes": 100, "window_s": 60.0},
    }
    sample.update(changes)
    return sample


def names(findings: list[Finding]) -> set[str]:
    return {f.name for f in findings}


def series(minutes: int, value: dict[str, Any], *, start: datetime = T0,
           step: timedelta = MINUTE) -> list[dict[str, Any]]:
    return [healthy(start + i * step, **value) for i in range(int(minutes / (step / MINUTE)) + 1)]


SUSTAINED = [
    # rule, settings minutes, the figures that put a sample over, ... just at the threshold
    ("latency_p95_sustained", SETTINGS.scale_latency_for_min,
     {"latency_p95_ms": 120.0}, {"latency_p95_ms": SETTINGS.scale_latency_p95_ms}),
    ("cpu_sustained", SETTINGS.scale_cpu_for_min,
     {"host": {"name": "db1", "cpu_pct": 80.0, "memory_pct": 40.0}},
     {"host": {"name": "db1", "cpu_pct": SETTINGS.scale_cpu_pct, "memory_pct": 40.0}}),
    ("memory_sustained", SETTINGS.scale_memory_for_min,
     {"host": {"name": "db1", "cpu_pct": 20.0, "memory_pct": 90.0}},
     {"host": {"name": "db1", "cpu_pct": 20.0, "memory_pct": SETTINGS.scale_memory_pct}}),
]


@pytest.mark.parametrize("name, minutes, over, at_threshold", SUSTAINED)
def test_sustained_rule_fires_at_the_boundary_and_not_before(
        name: str, minutes: float, over: dict[str, Any], at_threshold: dict[str, Any]) -> None:
    window = series(int(minutes), over)
    end = T0 + timedelta(minutes=minutes)
    assert name not in names(evaluate(window[:-1], end - MINUTE, SETTINGS, max_gap_s=GAP))
    # a second before the span is covered, with every sample so far over
    assert name not in names(evaluate(window[:-1], end - timedelta(seconds=1), SETTINGS,
                                      max_gap_s=GAP))
    fired = [f for f in evaluate(window, end, SETTINGS, max_gap_s=GAP) if f.name == name]
    assert len(fired) == 1
    f = fired[0]
    assert f.severity == rules.RULES[name].severity and f.runbook_section.startswith("Scaling")
    assert f.threshold is not None and f.value is not None and f.value > f.threshold
    # equal to the threshold is not over it
    flat = series(int(minutes), at_threshold)
    assert name not in names(evaluate(flat, end, SETTINGS, max_gap_s=GAP))


@pytest.mark.parametrize("name, minutes, over, at_threshold", SUSTAINED)
def test_a_gap_resets_a_sustained_rule(name: str, minutes: float, over: dict[str, Any],
                                       at_threshold: dict[str, Any]) -> None:
    window = series(int(minutes), over)
    end = T0 + timedelta(minutes=minutes)
    gappy = [s for s in window if not T0 + MINUTE <= s["taken_at"] <= T0 + 3 * MINUTE]
    assert name not in names(evaluate(gappy, end, SETTINGS, max_gap_s=GAP))
    # the run counts again from the end of the gap
    later = end + 3 * MINUTE
    assert name not in names(evaluate(gappy + series(3, over, start=end + MINUTE), later,
                                      SETTINGS, max_gap_s=GAP))
    resumed = gappy + series(int(minutes), over, start=end + MINUTE)
    assert name in names(evaluate(resumed, end + MINUTE * (minutes + 1), SETTINGS,
                                  max_gap_s=GAP))


@pytest.mark.parametrize("name, minutes, over, at_threshold", SUSTAINED)
def test_one_good_sample_resets_a_sustained_rule(name: str, minutes: float,
                                                 over: dict[str, Any],
                                                 at_threshold: dict[str, Any]) -> None:
    window = series(int(minutes), over)
    end = T0 + timedelta(minutes=minutes)
    window[2] = healthy(window[2]["taken_at"])
    assert name not in names(evaluate(window, end, SETTINGS, max_gap_s=GAP))
    # a sample whose figure is missing is not "over" either
    missing = series(int(minutes), over)
    missing[-1] = healthy(end, latency_p95_ms=None, host={"name": "db1"})
    assert name not in names(evaluate(missing, end, SETTINGS, max_gap_s=GAP))


def test_a_stale_window_fires_nothing() -> None:
    window = series(20, {"latency_p95_ms": 500.0, "pool_utilization_pct": 99.0})
    end = T0 + 20 * MINUTE
    assert {"latency_p95_sustained", "latency_p95", "pool_utilization"} <= names(
        evaluate(window, end, SETTINGS, max_gap_s=GAP))
    assert evaluate(window, end + timedelta(seconds=GAP + 1), SETTINGS, max_gap_s=GAP) == []


def node(role: str, **figures: Any) -> dict[str, Any]:
    return {"reachable": True, "role": role, "lag_s": 0.0 if role == "replica" else None,
            "connections": 5, "storage_pct": 10.0, **figures}


@pytest.mark.parametrize("name, below, above, node_name", [
    ("latency_p95", {"latency_p95_ms": 150.0}, {"latency_p95_ms": 150.5}, "node1"),
    ("pool_utilization", {"pool_utilization_pct": 90.0}, {"pool_utilization_pct": 95.0},
     "node1"),
    ("replica_lag",
     {"nodes": {"node1": node("primary"), "node2": node("replica", lag_s=30.0)}},
     {"nodes": {"node1": node("primary"), "node2": node("replica", lag_s=30.5)}}, "node2"),
    ("storage",
     {"nodes": {"node1": node("primary", storage_pct=85.0), "node2": node("replica")}},
     {"nodes": {"node1": node("primary", storage_pct=85.1), "node2": node("replica")}},
     "node1"),
    ("connections",
     {"nodes": {"node1": node("primary", connections=100), "node2": node("replica")}},
     {"nodes": {"node1": node("primary", connections=101), "node2": node("replica")}},
     "node1"),
    ("read_write_ratio", {"read_write": {"reads": 5000, "writes": 1000, "window_s": 60}},
     {"read_write": {"reads": 5001, "writes": 1000, "window_s": 60}}, "node1"),
])
def test_instant_rule_fires_just_over_its_threshold(name: str, below: dict[str, Any],
                                                     above: dict[str, Any],
                                                     node_name: str) -> None:
    assert name not in names(evaluate([healthy(T0, **below)], T0, SETTINGS, max_gap_s=GAP))
    fired = [f for f in evaluate([healthy(T0, **above)], T0, SETTINGS, max_gap_s=GAP)
             if f.name == name]
    assert [f.node for f in fired] == [node_name]
    rule = rules.RULES[name]
    assert fired[0].severity == rule.severity
    assert fired[0].runbook_section == rule.runbook_section and fired[0].recommendation
    # it judges the latest sample only: a good one after it clears it
    window = [healthy(T0, **above), healthy(T0 + MINUTE)]
    assert name not in names(evaluate(window, T0 + MINUTE, SETTINGS, max_gap_s=GAP))


def test_recommendations_name_pgbouncer_and_a_read_replica() -> None:
    assert "PgBouncer" in rules.RULES["connections"].recommendation
    assert rules.RULES["connections"].runbook_section.endswith("Connection Pool Scaling")
    assert "read replica" in rules.RULES["read_write_ratio"].recommendation
    assert rules.RULES["read_write_ratio"].runbook_section.endswith("Read Replica Addition")


def test_a_ratio_over_too_few_rows_or_without_writes_is_judged_sensibly() -> None:
    few = healthy(T0, read_write={"reads": 900, "writes": 10, "window_s": 60})
    assert "read_write_ratio" not in names(evaluate([few], T0, SETTINGS, max_gap_s=GAP))
    only_reads = healthy(T0, read_write={"reads": 5000, "writes": 0, "window_s": 60})
    assert "read_write_ratio" in names(evaluate([only_reads], T0, SETTINGS, max_gap_s=GAP))
    unknown = healthy(T0, read_write=None)
    assert "read_write_ratio" not in names(evaluate([unknown], T0, SETTINGS, max_gap_s=GAP))


def test_no_primary_is_p0_and_an_unreachable_node_p1() -> None:
    down = {"reachable": False, "error": "connection refused"}
    sample = healthy(T0, primary=None, nodes={"node1": down, "node2": node("replica")})
    found = {f.name: f for f in evaluate([sample], T0, SETTINGS, max_gap_s=GAP)}
    assert found["no_primary"].severity == "P0" and found["no_primary"].node is None
    assert "Database Connection Failures" in found["no_primary"].runbook_section
    assert found["node_unreachable"].severity == "P1"
    assert found["node_unreachable"].node == "node1"
    assert "connection refused" in found["node_unreachable"].message


def test_two_primaries_and_an_unreachable_application_dsn_are_p0() -> None:
    split = healthy(T0, nodes={"node1": node("primary"), "node2": node("primary")})
    assert rules.RULES["multiple_primaries"].severity == "P0"
    assert "multiple_primaries" in names(evaluate([split], T0, SETTINGS, max_gap_s=GAP))
    cut = healthy(T0, app={"reachable": False, "error": "timed out"})
    found = evaluate([cut], T0, SETTINGS, max_gap_s=GAP)
    assert [f.severity for f in found if f.name == "database_unreachable"] == ["P0"]
    assert names(evaluate([healthy(T0)], T0, SETTINGS, max_gap_s=GAP)) == set()


def test_transitions_fire_once_continue_and_resolve_when_cleared() -> None:
    lag = healthy(T0, nodes={"node1": node("primary"), "node2": node("replica", lag_s=45)})
    first = evaluate([lag], T0, SETTINGS, max_gap_s=GAP)
    step = transitions([], first)
    assert [f.key for f in step.fired] == [("replica_lag", "node2")]
    assert step.continuing == [] and step.resolved == []
    again = transitions([("replica_lag", "node2")],
                        evaluate([lag], T0 + MINUTE, SETTINGS, max_gap_s=GAP))
    assert again.fired == [] and [f.key for f in again.continuing] == [("replica_lag", "node2")]
    cleared = transitions([("replica_lag", "node2")],
                          evaluate([lag, healthy(T0 + 2 * MINUTE)], T0 + 2 * MINUTE, SETTINGS,
                                   max_gap_s=GAP))
    assert cleared.fired == [] and cleared.resolved == [("replica_lag", "node2")]


def test_severity_codes_come_from_the_runbook_table() -> None:
    assert {r.severity for r in rules.RULES.values()} == {"P0", "P1", "P2"}
    assert rules.worst_severity(["P2", None, "P0", "P1"]) == "P0"
    assert rules.worst_severity([]) is None


@pytest.mark.parametrize("name, warn, alert", [
    ("pool_utilization", {"pool_utilization_pct": 85.0}, {"pool_utilization_pct": 95.0}),
    ("replica_lag", {"nodes": {"node1": node("primary"), "node2": node("replica", lag_s=20.0)}},
     {"nodes": {"node1": node("primary"), "node2": node("replica", lag_s=31.0)}}),
    ("storage", {"nodes": {"node1": node("primary", storage_pct=75.0), "node2": node("replica")}},
     {"nodes": {"node1": node("primary", storage_pct=90.0), "node2": node("replica")}}),
])
def test_a_warning_band_is_p2_and_gives_way_to_the_alert(name: str, warn: dict[str, Any],
                                                         alert: dict[str, Any]) -> None:
    """Between the runbook's "normal" and "alert" thresholds a P2 warning fires (as the
    health check says warn); over the alert threshold only the alert does."""
    band = f"{name}_warn"
    found = {f.name: f for f in evaluate([healthy(T0, **warn)], T0, SETTINGS, max_gap_s=GAP)}
    assert set(found) == {band} and found[band].severity == "P2"
    assert "the alert is at" in found[band].message
    found = {f.name: f for f in evaluate([healthy(T0, **alert)], T0, SETTINGS, max_gap_s=GAP)}
    assert set(found) == {name} and found[name].severity == "P1"


def test_every_rule_names_its_settings_and_a_unit() -> None:
    for rule in rules.RULES.values():
        for field in (rule.threshold, rule.upper, rule.sustain):
            assert field is None or isinstance(field, float | int) or hasattr(SETTINGS, field)
        assert rule.threshold_of(SETTINGS) is not None and rule.condition
        assert "$threshold" in rule.expr and ("$upper" in rule.expr) == (rule.upper is not None)


def test_the_runbook_holds_one_verdict_per_condition() -> None:
    """docs/runbook.md's table is the rules': severity, status, exit code and fix."""
    from pathlib import Path

    from cardmint.ops.incidents.severity import STATUS_OF
    from cardmint.ops.monitor.runbook import verdicts_table

    text = (Path(__file__).resolve().parent.parent / "docs" / "runbook.md").read_text()
    assert verdicts_table(rules.RULES.values(), STATUS_OF) in text
    for rule in rules.RULES.values():
        assert "cardmint " in rule.advice("node2"), f"{rule.name} names no command"
    assert "`cardmint cluster rejoin node2`" in rules.RULES["node_unreachable"].advice("node2")
