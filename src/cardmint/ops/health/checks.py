"""Health checks as pure functions: a reading and thresholds in, a verdict out.

Each check carries a severity (runbook: P0 outage or data-loss risk, P1 degraded, P2
minor), and its status follows from it as everywhere else (`severity.STATUS_OF`: P0 and
P1 critical, P2 warn), so `health`, `alerts` and the dashboard cannot disagree on one
condition. The report's severity is the worst of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cardmint.ops.incidents.severity import STATUS_OF, most_severe

OK, WARN, CRITICAL = "ok", "warn", "critical"
_RANK = {OK: 0, WARN: 1, CRITICAL: 2}


@dataclass
class Check:
    name: str
    status: str
    value: float | None
    unit: str
    warn: float | None
    critical: float | None
    node: str | None
    detail: str
    severity: str | None = None  # what this status implies; None when ok

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level(value: float | None, warn: float | None, critical: float | None) -> str:
    """ok at or below warn, warn above it, critical above critical (the runbook's 'alert')."""
    if value is None:
        return OK
    if critical is not None and value > critical:
        return CRITICAL
    if warn is not None and value > warn:
        return WARN
    return OK


def worst(statuses: list[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


def worst_severity(severities: list[str | None]) -> str | None:
    return most_severe([s for s in severities if s])


def check(name: str, value: float | None, unit: str, warn: float | None,
          critical: float | None, *, node: str | None = None, detail: str = "",
          status: str | None = None, on_warn: str | None = "P2",
          on_critical: str | None = "P1") -> Check:
    """A check whose level comes from the thresholds unless given; a failing level takes
    its severity (on_warn, on_critical) and the status that severity means."""
    status = status or level(value, warn, critical)
    severity = {OK: None, WARN: on_warn, CRITICAL: on_critical}[status]
    if severity is not None:
        status = STATUS_OF[severity]
    return Check(name, status, None if value is None else round(value, 3), unit, warn,
                 critical, node, detail, severity)
