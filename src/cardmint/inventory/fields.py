"""Checks of single values, shared by the JSON API's domain calls, the price feed and CSV
import: each raises ValidationError naming the field, so a bad row can be reported and
skipped instead of failing at the database."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from cardmint import inputs
from cardmint.db.values import CONDITIONS
from cardmint.errors import ValidationError

GRADERS = ("PSA", "BGS", "CGC", "SGC")
LANGUAGE = re.compile(r"^[a-z]{2}(-[a-z]{2,4})?$")
MAX_CENTS = 100_000_000_00  # $100M: beyond any card, and far inside bigint
MAX_TEXT = 100
# Dates a card can have been acquired on: the game began in 1996; tomorrow covers any zone.
FIRST_DAY = date(1990, 1, 1)


def text(value: Any, field: str, *, max_length: int = MAX_TEXT,
         required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError("is required", field=field)
        return None
    if not isinstance(value, str):
        raise ValidationError("must be text", field=field)
    cleaned = value.strip()
    if len(cleaned) > max_length:
        raise ValidationError(f"at most {max_length} characters", field=field)
    return inputs.short_text(cleaned, field)  # no NUL, control, bidi or lone surrogate


def cents(value: Any, field: str, *, required: bool = False) -> int | None:
    """Integer cents, 0 <= value <= MAX_CENTS (booleans and floats are refused: money
    that passed through a float has already lost its exactness)."""
    if value is None:
        if required:
            raise ValidationError("is required", field=field)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be an integer number of cents", field=field)
    if value < 0:
        raise ValidationError("must not be negative", field=field)
    if value > MAX_CENTS:
        raise ValidationError(f"must be at most {MAX_CENTS}", field=field)
    return value


def dollars(value: str, field: str) -> int | None:
    """'12.34' or '$1,234.5' as cents; empty is None. More than 2 decimals is refused."""
    return inputs.cents(value, field, maximum=MAX_CENTS)


def condition(value: Any, field: str = "condition") -> str:
    if value not in CONDITIONS:
        raise ValidationError(f"must be one of {', '.join(CONDITIONS)}", field=field)
    return str(value)


def language(value: Any, field: str = "language") -> str:
    if not isinstance(value, str) or len(value) > 10 or not LANGUAGE.match(value):
        raise ValidationError("must be a language code such as en or pt-br", field=field)
    return value


def grading(company: Any, grade: Any, cert: Any) -> tuple[str | None, Decimal | None,
                                                             str | None]:
    """(company, grade, cert) consistent with the schema's rules: a grade needs a company
    and the reverse; a cert number needs a company; grades 1-10 in half steps."""
    if company is not None and company not in GRADERS:
        raise ValidationError(f"must be one of {', '.join(GRADERS)}", field="gradingCompany")
    parsed: Decimal | None = None
    if grade is not None:
        if isinstance(grade, bool):
            raise ValidationError("must be a number from 1 to 10", field="grade")
        if isinstance(grade, str):  # typed: ASCII digits only ('١٠' is not 10 here)
            parsed = inputs.decimal(grade, "grade", "must be a number from 1 to 10")
        else:
            try:
                parsed = Decimal(str(grade))
            except InvalidOperation:
                raise ValidationError("must be a number from 1 to 10", field="grade") from None
        if not parsed.is_finite() or not 1 <= parsed <= 10 or parsed * 2 % 1 != 0:
            raise ValidationError("must be 1 to 10 in steps of 0.5", field="grade")
    if company is not None and parsed is None:
        raise ValidationError("a graded item needs its grade", field="grade")
    if parsed is not None and company is None:
        raise ValidationError("a grade needs its grading company", field="gradingCompany")
    cert = text(cert, "certNumber", max_length=32)
    if cert is not None and company is None:
        raise ValidationError("a cert number needs its grading company", field="certNumber")
    return company, parsed, cert


def day(value: Any, field: str, *, today: date | None = None) -> date | None:
    """A calendar date from FIRST_DAY to tomorrow (no acquisition in year 1 or 9999)."""
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date | str):
        raise ValidationError("must be a date (YYYY-MM-DD)", field=field)
    if isinstance(value, str):
        raw = value.strip()
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw, re.ASCII) is None:
            raise ValidationError(f"{raw[:20]!r} is not a date (YYYY-MM-DD)", field=field)
        try:
            parsed = date.fromisoformat(raw)
        except ValueError:
            raise ValidationError(f"{raw!r} is not a date (YYYY-MM-DD)", field=field) from None
    else:
        parsed = value
    last = (today or datetime.now(UTC).date()) + timedelta(days=1)
    if not FIRST_DAY <= parsed <= last:
        raise ValidationError(f"must be from {FIRST_DAY.isoformat()} to {last.isoformat()}",
                              field=field)
    return parsed


def instant(value: Any, field: str) -> datetime:
    """An ISO 8601 timestamp with its offset: a naive one would mean the server's zone."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{value!r} is not an ISO 8601 timestamp",
                                  field=field) from None
    else:
        raise ValidationError("must be an ISO 8601 timestamp", field=field)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValidationError("must carry a UTC offset (e.g. Z)", field=field)
    try:  # in UTC first: 2200-12-31T23:00-05:00 is in 2201
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError("is out of range", field=field) from None
    if not 1990 <= parsed.year <= 2200:
        raise ValidationError("is out of range", field=field)
    return parsed
