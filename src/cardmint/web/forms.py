"""Reading a submitted form without another dependency: our forms are urlencoded."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from cardmint import inputs

__all__ = ["CONDITION_NAMES", "FormRefused", "read_form"]

MAX_FIELDS = 50  # our largest form has a dozen


class FormRefused(Exception):
    """A form no page could use: too many fields, or a character no field may hold."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


async def read_form(request: Request, *, multiline: tuple[str, ...] = ()) -> dict[str, str]:
    """The fields of an `application/x-www-form-urlencoded` body (the last value of a
    repeated name wins); anything else reads as an empty form, which then fails its
    checks with a message instead of a 500. Every field of our forms is short text, so
    a control or direction-changing character anywhere refuses the form (FormRefused);
    the `multiline` fields (a textarea) may also hold line breaks, each line checked."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:  # more fields than max_num_fields
        raise FormRefused("form", f"has more than {MAX_FIELDS} fields") from None
    for name, value in pairs:
        lines = value.replace("\r\n", "\n").split("\n") if name in multiline else [value]
        problem = inputs.text_problem(name) or next(
            (p for p in map(inputs.text_problem, lines) if p is not None), None)
        if problem is not None:
            raise FormRefused(name if inputs.text_problem(name) is None else "form", problem)
    return dict(pairs)


# The domain names money fields by their cents; the forms take dollars under these names.
WEB_FIELDS = {"acquisitionCostCents": "acquisitionCost", "amountCents": "amount"}


def field_of(field: str | None) -> str:
    """The form field a domain error names ("form" when it names none)."""
    if not field:
        return "form"
    return WEB_FIELDS.get(field, field)


def positive_id(value: str | None) -> int | None:
    """A database id from a path or a hidden field; None when it cannot be one."""
    return inputs.whole(value, minimum=1, maximum=2**63 - 1)


# the condition choices every form offers, in grading order
CONDITION_NAMES = [("NM", "NM: near mint"), ("LP", "LP: lightly played"),
                   ("MP", "MP: moderately played"), ("HP", "HP: heavily played"),
                   ("DMG", "DMG: damaged")]
