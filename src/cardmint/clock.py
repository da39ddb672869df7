"""Time as the ops functions take it: an aware `now` injected by callers and tests
(never a sleep), read from the wall clock only when none is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cardmint.errors import ValidationError


def utc(now: datetime | None = None) -> datetime:
    """`now` in UTC, or the current time. A naive datetime is refused: guessing its zone
    would move a maintenance window or a deadline by hours."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValidationError("now must be timezone-aware", field="now")
    return now.astimezone(UTC)


def format_duration(delta: timedelta | float) -> str:
    """`2 d 3 h`, `1 h 05 min`, `12 min 30 s`, `45 s`: as an on-call person reads them."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    total = round(seconds)
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes:02d} min"
    elif minutes:
        text = f"{minutes} min" + (f" {secs:02d} s" if secs else "")
    else:
        text = f"{secs} s"
    return sign + text
