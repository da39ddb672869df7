"""What the audit reports: findings, each with a severity and a fix, and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cardmint.ops.incidents.severity import most_severe

STATUS_BY_SEVERITY = {None: "ok", "P2": "warn", "P1": "critical", "P0": "critical"}
EXIT_BY_STATUS = {"ok": 0, "warn": 1, "critical": 2}


@dataclass
class Finding:
    """One thing wrong. Severities follow the runbook: P0 takeover or data-loss risk now,
    P1 a weakness an attacker could use, P2 hygiene."""

    id: str
    severity: str
    object: str
    detail: str
    fix: str


@dataclass
class AuditReport:
    findings: list[Finding]
    connections: list[dict[str, Any]] = field(default_factory=list)
    audited_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    nodes: list[str] = field(default_factory=list)  # the nodes whose server was audited
    tokens: dict[str, Any] = field(default_factory=dict)  # API tokens, admin ones apart

    @property
    def status(self) -> str:
        return STATUS_BY_SEVERITY[most_severe([f.severity for f in self.findings])]

    @property
    def exit_code(self) -> int:
        return EXIT_BY_STATUS[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "findings": [asdict(f) for f in self.findings],
                "connections": self.connections, "nodes": self.nodes, "tokens": self.tokens,
                "audited_at": self.audited_at.isoformat()}
