"""The runbook's severity levels (Incident Response): the one table alerts, health and
incidents read, so a P1 means the same response time everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cardmint.errors import ValidationError


@dataclass(frozen=True)
class Severity:
    code: str  # P0, P1, P2: what the database's CHECK constraints accept
    label: str
    description: str
    response: timedelta  # acknowledge within this long of opening
    actions: str

    def deadline(self, opened_at: datetime) -> datetime:
        return opened_at + self.response

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "label": self.label, "description": self.description,
                "response_s": self.response.total_seconds(), "actions": self.actions}


# Gravest first: most_severe() and anything ranking levels rely on this order.
SEVERITIES: dict[str, Severity] = {
    s.code: s for s in (
        Severity("P0", "Critical", "Complete outage, data loss risk",
                 timedelta(minutes=15), "All hands, emergency procedures"),
        Severity("P1", "High", "Degraded performance, user impact",
                 timedelta(hours=1), "Investigate, mitigate, schedule fix"),
        Severity("P2", "Medium", "Minor issues, no user impact",
                 timedelta(hours=4), "Standard troubleshooting"),
    )
}


# One verdict per condition: a severity implies the status every face shows and the exit
# code every command gives (health's critical = 2 = alerts' P1/P0 = red on the dashboard).
STATUS_OF: dict[str, str] = {"P0": "critical", "P1": "critical", "P2": "warn"}


def get_severity(code: str) -> Severity:
    """The level for a code (case and surrounding spaces ignored), or a ValidationError
    naming the field."""
    found = SEVERITIES.get(str(code).strip().upper())
    if found is None:
        raise ValidationError(
            f"severity must be one of {', '.join(SEVERITIES)}, not {code!r}", field="severity")
    return found



def most_severe(codes: Iterable[str | None]) -> str | None:
    """The gravest of some codes (P0 before P1 before P2), None for none; for reports whose
    severity is the worst of their parts."""
    order = list(SEVERITIES)
    found = [get_severity(c).code for c in codes if c]
    return min(found, key=order.index) if found else None
