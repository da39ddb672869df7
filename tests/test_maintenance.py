"""Maintenance windows over real calendar edge cases, the guard disruptive commands call,
and `cardmint maintenance status`."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from cardmint.errors import UsageError, ValidationError
from cardmint.ops import maintenance
from cardmint.ops.maintenance import current_window, next_window, require_window, status
from test_cli import cardmint, no_traceback


def at(text: str) -> datetime:
    """An ISO time; UTC unless it names its zone."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.mark.parametrize("now, kind", [
    # a Sunday (2025-06-01, also a month whose 1st is a Sunday): 02:00 to 04:00, end excluded
    ("2025-06-01T01:59:59", None),
    ("2025-06-01T02:00:00", "weekly"),
    ("2025-06-01T03:59:59", "weekly"),
    ("2025-06-01T04:00:00", None),
    # its first Saturday is the 7th: 01:00 to 06:00
    ("2025-06-07T00:59:59", None),
    ("2025-06-07T01:00:00", "monthly"),
    ("2025-06-07T05:59:59", "monthly"),
    ("2025-06-07T06:00:00", None),
    ("2025-06-14T01:30:00", None),  # the second Saturday
    ("2025-06-14T02:30:00", None),  # a Saturday is not a Sunday
    # a month whose 1st is a Saturday (2025-02): the 1st is the first Saturday, the 8th is not
    ("2025-02-01T01:00:00", "monthly"),
    ("2025-02-08T03:00:00", None),
    ("2026-02-07T01:00:00", "monthly"),  # 1st a Sunday: first Saturday on the 7th
    # both windows on one weekend (2026-08-01 Sat, 08-02 Sun)
    ("2026-08-01T05:00:00", "monthly"),
    ("2026-08-02T03:00:00", "weekly"),
    ("2025-12-31T02:30:00", None),  # a Wednesday
    # other zones are converted, not taken as UTC
    ("2025-06-01T04:30:00+02:00", "weekly"),
    ("2025-06-01T03:30:00-01:00", None),
])
def test_current_window(now: str, kind: str | None) -> None:
    window = current_window(at(now))
    assert (window.kind if window else None) == kind
    if window:
        assert window.starts_at <= at(now) < window.ends_at
        assert window.starts_at.tzinfo is UTC


@pytest.mark.parametrize("now, starts_at, kind", [
    ("2025-06-01T01:59:00", "2025-06-01T02:00:00", "weekly"),
    # inside a window: the next one to begin, not the one running
    ("2025-06-01T02:00:00", "2025-06-07T01:00:00", "monthly"),
    ("2025-06-01T04:00:00", "2025-06-07T01:00:00", "monthly"),
    ("2025-06-07T00:59:59", "2025-06-07T01:00:00", "monthly"),
    ("2025-06-07T06:00:00", "2025-06-08T02:00:00", "weekly"),
    ("2025-06-14T01:30:00", "2025-06-15T02:00:00", "weekly"),
    # across a month boundary
    ("2025-03-30T04:00:00", "2025-04-05T01:00:00", "monthly"),
    ("2025-08-31T04:00:00", "2025-09-06T01:00:00", "monthly"),
    ("2025-01-31T12:00:00", "2025-02-01T01:00:00", "monthly"),
    ("2026-07-31T12:00:00", "2026-08-01T01:00:00", "monthly"),
    ("2026-08-01T06:00:00", "2026-08-02T02:00:00", "weekly"),
    # across the year end
    ("2025-12-28T04:00:00", "2026-01-03T01:00:00", "monthly"),
    ("2025-12-31T23:59:59", "2026-01-03T01:00:00", "monthly"),
])
def test_next_window(now: str, starts_at: str, kind: str) -> None:
    window = next_window(at(now))
    assert (window.starts_at, window.kind) == (at(starts_at), kind)
    length = {"weekly": timedelta(hours=2), "monthly": timedelta(hours=5)}[kind]
    assert window.ends_at - window.starts_at == length


def test_a_year_agrees_with_the_calendar() -> None:
    """Every half hour of 2025 against the runbook's rules written out another way."""
    windows = []
    for offset in range(-7, 380):
        day = date(2025, 1, 1) + timedelta(days=offset)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if day.isoweekday() == 7:
            windows.append((midnight + timedelta(hours=2), midnight + timedelta(hours=4)))
        if day.isoweekday() == 6 and (day - timedelta(days=7)).month != day.month:
            windows.append((midnight + timedelta(hours=1), midnight + timedelta(hours=6)))
    windows.sort()
    now = datetime(2025, 1, 1, tzinfo=UTC)
    while now.year == 2025:
        inside = [w for w in windows if w[0] <= now < w[1]]
        window = current_window(now)
        got = (window.starts_at, window.ends_at) if window else None
        assert got == (inside[0] if inside else None), now
        upcoming = next(w for w in windows if w[0] > now)
        assert next_window(now).starts_at == upcoming[0], now
        now += timedelta(minutes=30)


def test_status() -> None:
    report = status(at("2025-06-01T03:00:00"))
    assert report["in_window"] is True
    assert report["window"]["kind"] == "weekly" and report["seconds_left"] == 3600
    assert report["next"]["starts_at"] == at("2025-06-07T01:00:00")
    assert report["seconds_until_next"] == (6 * 24 - 2) * 3600
    outside = status(at("2025-06-02T00:00:00"))
    assert outside["in_window"] is False and outside["window"] is None
    assert outside["seconds_left"] is None
    assert set(outside) == {"now", "in_window", "window", "seconds_left", "next",
                            "seconds_until_next"}
    assert set(outside["next"]) == {"name", "kind", "starts_at", "ends_at"}


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        current_window(datetime(2025, 6, 1, 3, 0))
    assert caught.value.field == "now"


@pytest.mark.parametrize("now", ["2025-06-01T02:00:00", "2025-06-07T05:59:59",
                                 "2025-06-07T06:59:59+01:00"])
def test_require_window_passes_inside_a_window(now: str) -> None:
    require_window("VACUUM FULL", force=False, now=at(now))


def test_require_window_refuses_outside_naming_the_action_and_next_window() -> None:
    with pytest.raises(UsageError) as caught:
        require_window("failover drill", force=False, now=at("2025-06-04T12:00:00"))
    message = str(caught.value)
    assert "failover drill" in message and "--force" in message
    assert "2025-06-07 01:00" in message and "monthly" in message
    assert "2 d 13 h" in message


def test_require_window_with_force_passes_and_leaves_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger=maintenance.__name__):
        require_window("restart", force=True, now=at("2025-06-04T12:00:00"))
    assert "restart forced outside a maintenance window" in caplog.text


def test_require_window_defaults_to_the_clock() -> None:
    now = datetime.now(UTC)
    if current_window(now) is None and current_window(now + timedelta(seconds=5)) is None:
        with pytest.raises(UsageError):
            require_window("restart", force=False)
    require_window("restart", force=True)


def test_cli_status_json_parses() -> None:
    done = cardmint(None, "maintenance", "status", "--json", "--at", "2025-06-01T04:30+02:00")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["in_window"] is True and report["window"]["kind"] == "weekly"
    assert report["window"]["starts_at"] == "2025-06-01T02:00:00+00:00"
    assert report["next"]["starts_at"] == "2025-06-07T01:00:00+00:00"
    assert report["seconds_until_next"] == 6 * 86400 - 3600 - 1800

    now = cardmint(None, "maintenance", "status", "--json")
    assert now.returncode == 0, now.stderr
    report = json.loads(now.stdout)
    assert datetime.fromisoformat(report["now"]).tzinfo == UTC
    assert report["seconds_until_next"] > 0


def test_cli_status_for_people() -> None:
    done = cardmint(None, "maintenance", "status", "--at", "2025-06-04T12:00:00Z")
    assert done.returncode == 0, done.stderr
    assert "outside maintenance windows" in done.stdout
    assert "monthly maintenance" in done.stdout and "Sat 2025-06-07 01:00" in done.stdout


@pytest.mark.parametrize("value", ["2025-06-04T12:00:00", "next sunday"])
def test_cli_status_refuses_a_bad_time(value: str) -> None:
    done = cardmint(None, "maintenance", "status", "--json", "--at", value)
    assert done.returncode == 3
    assert json.loads(done.stdout)["ok"] is False and "--at" in done.stderr
    no_traceback(done)
