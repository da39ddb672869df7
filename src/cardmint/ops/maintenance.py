"""The runbook's maintenance windows, and the guard disruptive commands call first.

Scheduled maintenance (all UTC): weekly Sunday 02:00-04:00, monthly the first Saturday
of the month 01:00-06:00. A window holds from its start up to, not including, its end.
Everything here is a function of an aware `now`, so the calendar is tested without a clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from cardmint.clock import format_duration, utc
from cardmint.errors import UsageError

log = logging.getLogger(__name__)

SUNDAY, SATURDAY = 6, 5


@dataclass(frozen=True)
class Schedule:
    """A recurring window: on the days `matches` accepts, from `start` for `length`."""

    name: str
    kind: str
    matches: Callable[[date], bool]
    start: time
    length: timedelta

    def on(self, day: date) -> Window | None:
        if not self.matches(day):
            return None
        starts_at = datetime.combine(day, self.start, tzinfo=UTC)
        return Window(self.name, self.kind, starts_at, starts_at + self.length)


@dataclass(frozen=True)
class Window:
    name: str
    kind: str  # weekly | monthly
    starts_at: datetime
    ends_at: datetime

    def contains(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "starts_at": self.starts_at,
                "ends_at": self.ends_at}

    def describe(self) -> str:
        return (f"{self.name} {self.starts_at:%a %Y-%m-%d %H:%M}-{self.ends_at:%H:%M} UTC")


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("weekly maintenance", "weekly", lambda d: d.weekday() == SUNDAY,
             time(2, 0), timedelta(hours=2)),
    # The first Saturday is the one among the 1st to the 7th.
    Schedule("monthly maintenance", "monthly", lambda d: d.weekday() == SATURDAY and d.day <= 7,
             time(1, 0), timedelta(hours=5)),
)
# Every schedule recurs at least weekly, and no window outlasts a day: these bound the search.
LONGEST = max(s.length for s in SCHEDULES)
HORIZON_DAYS = 8


def _windows_on(day: date) -> list[Window]:
    return [w for s in SCHEDULES if (w := s.on(day)) is not None]


def current_window(now: datetime) -> Window | None:
    """The window `now` falls in, or None."""
    now = utc(now)
    first = (now - LONGEST).date()
    for offset in range((now.date() - first).days + 1):
        for window in _windows_on(first + timedelta(days=offset)):
            if window.contains(now):
                return window
    return None


def next_window(now: datetime) -> Window:
    """The next window to begin strictly after `now` (not the one `now` is in)."""
    now = utc(now)
    for offset in range(HORIZON_DAYS + 1):
        later = [w for w in _windows_on(now.date() + timedelta(days=offset))
                 if w.starts_at > now]
        if later:
            return min(later, key=lambda w: w.starts_at)
    raise AssertionError("every schedule recurs within a week")  # pragma: no cover


def status(now: datetime | None = None) -> dict[str, Any]:
    """Where `now` stands: in a window or not, and the next window."""
    now = utc(now)
    window, upcoming = current_window(now), next_window(now)
    return {
        "now": now,
        "in_window": window is not None,
        "window": window.to_dict() if window else None,
        "seconds_left": (window.ends_at - now).total_seconds() if window else None,
        "next": upcoming.to_dict(),
        "seconds_until_next": (upcoming.starts_at - now).total_seconds(),
    }


def require_window(action: str, *, force: bool, now: datetime | None = None) -> None:
    """Call first in a disruptive command: returns inside a window or with `force`,
    else raises UsageError (CLI exit 3) naming the action, the next window and --force."""
    now = utc(now)
    if current_window(now) is not None:
        return
    upcoming = next_window(now)
    if force:
        log.warning("%s forced outside a maintenance window (next: %s)", action,
                    upcoming.describe())
        return
    wait = format_duration(upcoming.starts_at - now)
    raise UsageError(
        f"{action} is disruptive and runs only in a maintenance window; the next is "
        f"{upcoming.describe()} (in {wait}). Pass --force to run it now."
    )
