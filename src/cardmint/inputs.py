"""Reading what clients type: whole numbers, amounts of money and short text, in this one
place, for the API, the pages, the CSV import and the CLI alike.

Python's own predicates are too kind for input: `"²".isdigit()` and `"٣".isdigit()` are
true (then `int("²")` raises, and `int("٣")` is 3), `Decimal("1e30")` is a number that
`quantize` cannot hold, and `str.isupper()` takes "ÀÉÎ". Here a number is ASCII digits,
bounded before it is converted; a short text holds no control or direction-changing
character. `tests/test_inputs.py` keeps the rest of the code from parsing numbers itself.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

from cardmint.errors import ValidationError

ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# '12', '12.3', '12.34', '1,234.50', optionally after '$': no sign, no exponent
DOLLARS = re.compile(r"\$?((?:[0-9]{1,3}(?:,[0-9]{3})+)|[0-9]+)(?:\.([0-9]{1,2}))?", re.ASCII)
DECIMAL = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,4})?", re.ASCII)
MAX_DIGITS = 18  # fits a bigint whatever the digits
# Bidirectional formatting characters: they reorder what a person reads ("Trojan source").
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})  # controls, surrogates, line breaks


def is_digits(text: str) -> bool:
    """True for one or more ASCII digits and nothing else (no sign, space or '²')."""
    return ASCII_DIGITS.fullmatch(text) is not None


def whole(text: str | None, *, minimum: int = 0, maximum: int = 10**MAX_DIGITS - 1
          ) -> int | None:
    """The number `text` spells in ASCII digits, if it lies in [minimum, maximum];
    else None. Never raises: callers say what they wanted."""
    if text is None or not is_digits(text) or len(text.lstrip("0")) > MAX_DIGITS:
        return None
    number = int(text)
    return number if minimum <= number <= maximum else None


def whole_or_refuse(text: str, field: str, *, minimum: int = 0, maximum: int) -> int:
    """`whole`, raising ValidationError naming `field` when `text` is not such a number."""
    number = whole(text.strip(), minimum=minimum, maximum=maximum)
    if number is None:
        raise ValidationError(f"must be a whole number from {minimum} to {maximum}",
                              field=field)
    return number


def cents(text: str, field: str, *, maximum: int) -> int | None:
    """'12.34', '$1,234.5' or '7' dollars as cents, at most `maximum`; empty is None."""
    raw = text.strip()
    if not raw:
        return None
    found = DOLLARS.fullmatch(raw)
    if found is None:
        shown = raw[:20] + ("…" if len(raw) > 20 else "")
        if re.fullmatch(r"\$?[0-9,]+\.[0-9]{3,}", raw, re.ASCII):
            raise ValidationError(f"{shown!r} has more than 2 decimals", field=field)
        raise ValidationError(f"{shown!r} is not an amount of dollars (e.g. 12.34)",
                              field=field)
    units, fraction = found.group(1).replace(",", ""), (found.group(2) or "").ljust(2, "0")
    if len(units.lstrip("0")) > MAX_DIGITS - 2:
        raise ValidationError(f"must be at most {maximum / 100:,.2f} dollars", field=field)
    amount = int(units) * 100 + int(fraction)
    if amount > maximum:
        raise ValidationError(f"must be at most {maximum / 100:,.2f} dollars", field=field)
    return amount


def money(text: str, field: str, *, maximum: int, places: int = 4) -> Decimal | None:
    """'352.0680', '$1,234.5' or '7' dollars kept exactly (up to `places` decimals, as
    Collectr's costs have 4), at most `maximum` cents; empty is None."""
    raw = text.strip()
    if not raw:
        return None
    pattern = r"\$?((?:[0-9]{1,3}(?:,[0-9]{3})+)|[0-9]+)(?:\.([0-9]{1,PLACES}))?"
    found = re.fullmatch(pattern.replace("PLACES", str(places)), raw, re.ASCII)
    if found is None:
        shown = raw[:20] + ("…" if len(raw) > 20 else "")
        raise ValidationError(f"{shown!r} is not an amount of dollars with at most "
                              f"{places} decimals (e.g. 12.3400)", field=field)
    units = found.group(1).replace(",", "")
    if len(units.lstrip("0")) > MAX_DIGITS - 2:
        raise ValidationError(f"must be at most {maximum / 100:,.2f} dollars", field=field)
    amount = Decimal(f"{units}.{found.group(2) or '0'}")
    if amount * 100 > maximum:
        raise ValidationError(f"must be at most {maximum / 100:,.2f} dollars", field=field)
    return amount


def decimal(text: str, field: str, message: str) -> Decimal:
    """A small plain decimal ('8', '9.5'): ASCII digits and one point, nothing else."""
    raw = text.strip()
    if DECIMAL.fullmatch(raw) is None:
        raise ValidationError(message, field=field)
    return Decimal(raw)


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """What makes `value` unfit to store and show, or None. Refused everywhere: NUL and
    other control characters, lone surrogates, line and paragraph separators, and the
    characters that reorder text; `multiline` lets tabs and line feeds through (OCR text)."""
    if value.isascii() and value.isprintable():
        return None  # the common case, in C: no control character, nothing to reorder
    for ch in value:
        if multiline and ch in "\t\n\r":
            continue
        if ch in BIDI_CONTROLS:
            return "must not contain direction-changing characters"
        category = unicodedata.category(ch)
        if category in UNSAFE_CATEGORIES:
            if ch == "\x00":
                return "must not contain NUL characters"
            if category == "Cs":
                return "must be valid Unicode"
            return "must not contain control characters or line breaks"
    return None


def short_text(value: str, field: str) -> str:
    """`value` if it is fit to store (see `text_problem`); else ValidationError."""
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(problem, field=field)
    return value


def currency(value: object, field: str = "currency") -> str:
    """A currency code: exactly three ASCII capitals (ISO 4217's shape)."""
    if not isinstance(value, str) or re.fullmatch(r"[A-Z]{3}", value, re.ASCII) is None:
        raise ValidationError("must be a 3-letter currency code in capitals, e.g. USD",
                              field=field)
    return value
