"""Reading what clients type (issue 15, items 3 and 8): numbers are ASCII digits, bounded
before conversion; short text holds no control or direction-changing character; and no
module parses a number with Python's too-kind predicates (the class of bug, not the
instance: `"²".isdigit()` is true, then `int("²")` raises)."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardmint import inputs
from cardmint.errors import ValidationError
from cardmint.inventory import fields

SRC = Path(__file__).resolve().parent.parent / "src" / "cardmint"
KIND_PREDICATES = {"isdigit", "isdecimal", "isnumeric"}
ONE_PLACE = SRC / "inputs.py"


def test_no_module_parses_numbers_with_unicode_predicates() -> None:
    """`str.isdigit()` and its kin say yes to '²' and '٣': outside inputs.py nobody calls
    them; everybody calls inputs.whole / is_digits / cents."""
    found = []
    for path in SRC.rglob("*.py"):
        if path == ONE_PLACE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in KIND_PREDICATES:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} .{node.attr}()")
    assert found == []


@pytest.mark.parametrize("text", ["²", "٣", "１２", "1²", "-1", "+1", " 1", "1 ", "1_000",
                                  "1e3", "", "0x10", "9" * 40])
def test_whole_refuses_anything_but_ascii_digits(text: str) -> None:
    assert inputs.whole(text) is None
    assert not inputs.is_digits(text) or text == "9" * 40


def test_whole_bounds_before_converting() -> None:
    assert inputs.whole("007") == 7
    assert inputs.whole("0", minimum=1) is None
    assert inputs.whole("10001", maximum=10_000) is None
    assert inputs.whole("0" * 30 + "5") == 5  # leading zeros are not digits of size


@given(st.text(max_size=30))
def test_whole_never_raises_and_agrees_with_int(text: str) -> None:
    value = inputs.whole(text)
    if value is not None:
        assert text.isascii() and int(text) == value


@pytest.mark.parametrize(("text", "cents"), [("12.34", 1234), ("$1,234.5", 123450),
                                             ("7", 700), ("0.05", 5), ("", None)])
def test_cents(text: str, cents: int | None) -> None:
    assert inputs.cents(text, "amount", maximum=10**10) == cents


@pytest.mark.parametrize("text", ["1e30", "1E2", "٣", "12.345", "-5", "NaN", "Infinity",
                                  "1,23.4", "$", "9" * 30, "1.0e5"])
def test_cents_refuses_with_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        inputs.cents(text, "acquisitionCost", maximum=10**10)
    assert refused.value.field == "acquisitionCost"


def test_dollars_of_the_domain_use_it() -> None:
    """Issue 15: acquisitionCost=1e30 and amount=1e30 raised in Decimal.quantize."""
    for text in ("1e30", "1E+30", "100000000000000000000"):
        with pytest.raises(ValidationError):
            fields.dollars(text, "amount")


@pytest.mark.parametrize("text", ["Box\r\nA", "Box\nA", "Box\x00", "\u202eAxoB", "A\u2066B",
                                  "tab\there", "line\u2028sep", "\x1b[31m"])
def test_short_text_refuses_control_and_bidi(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        fields.text(text, "location")
    assert refused.value.field == "location"


def test_short_text_keeps_what_people_write() -> None:
    for text in ("Binder A / page 3", "Classeur «Pokémon» №2", "棚 3", "Box 🃏", "O'Neil"):
        assert fields.text(text, "location") == text
    assert inputs.text_problem("line one\nline two", multiline=True) is None
    assert inputs.text_problem("\u202e", multiline=True) is not None


@pytest.mark.parametrize("value", ["0001-01-01", "9999-12-31", "1989-12-31", "٢٠٢٤-٠١-٠١",
                                   "2024-1-1", "2024-02-30"])
def test_dates_are_bounded(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        fields.day(value, "acquiredOn", today=date(2026, 12, 1))
    assert refused.value.field == "acquiredOn"
    assert fields.day("2026-12-02", "acquiredOn", today=date(2026, 12, 1)) == date(2026, 12, 2)
    with pytest.raises(ValidationError):
        fields.day(date(1, 1, 1), "acquiredOn")


@pytest.mark.parametrize("value", ["ÀÉÎ", "usd", "US", "USDX", "U$D", "ＵＳＤ", 840, None])
def test_currency_is_three_ascii_capitals(value: object) -> None:
    with pytest.raises(ValidationError):
        inputs.currency(value)
    assert inputs.currency("EUR") == "EUR"


def test_grades_typed_are_ascii() -> None:
    with pytest.raises(ValidationError):
        fields.grading("PSA", "١٠", None)
    assert fields.grading("PSA", "9.5", None)[1] == 9.5
