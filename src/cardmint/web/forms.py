"""Reading a submitted form without another dependency: our forms are urlencoded."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

__all__ = ["CONDITION_NAMES", "read_form"]


async def read_form(request: Request) -> dict[str, str]:
    """The fields of an `application/x-www-form-urlencoded` body (the last value of a
    repeated name wins); anything else reads as an empty form, which then fails its
    checks with a message instead of a 500."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True, max_num_fields=200))


# The domain names money fields by their cents; the forms take dollars under these names.
WEB_FIELDS = {"acquisitionCostCents": "acquisitionCost", "amountCents": "amount"}


def field_of(field: str | None) -> str:
    """The form field a domain error names ("form" when it names none)."""
    if not field:
        return "form"
    return WEB_FIELDS.get(field, field)


def positive_id(value: str | None) -> int | None:
    """A database id from a path or a hidden field; None when it cannot be one."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    number = int(value)
    return number if number >= 1 else None


# the condition choices every form offers, in grading order
CONDITION_NAMES = [("NM", "NM: near mint"), ("LP", "LP: lightly played"),
                   ("MP", "MP: moderately played"), ("HP", "HP: heavily played"),
                   ("DMG", "DMG: damaged")]
