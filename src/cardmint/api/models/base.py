"""What every request body and every response model is built on.

Request bodies (`Model`): unknown fields refused, and text PostgreSQL cannot store or a
person should not be shown (NUL, control and direction-changing characters: see
`cardmint.inputs.text_problem`) refused here, by field, instead of failing at the
database. Only the fields a model names in MULTILINE (OCR text) may hold line breaks.
Responses (`Schema`): camelCase on the wire, built in Python by field name, serialised by
FastAPI straight to JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

from cardmint import inputs

Condition = Literal["NM", "LP", "MP", "HP", "DMG"]

# `datetime.isoformat()`, as the API has always sent: "+00:00", where pydantic writes "Z".
Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time"})]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    MULTILINE: ClassVar[frozenset[str]] = frozenset()  # fields that may hold line breaks

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        """Every string, a list's strings and a mapping's keys are short text; a
        mapping's values (notes) and the MULTILINE fields may also hold line breaks."""
        multiline = info.field_name in cls.MULTILINE
        if isinstance(value, dict):
            parts = [(k, False) for k in value] + [(v, True) for v in value.values()]
        elif isinstance(value, list):
            parts = [(v, False) for v in value]
        else:
            parts = [(value, multiline)]
        for part, lines in parts:
            if isinstance(part, str):
                problem = inputs.text_problem(part, multiline=lines)
                if problem is not None:
                    raise ValueError(problem)
        return value


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true would otherwise read as HP 1
        raise ValueError("must be a number or the text read")
    return value


def _hp_bounded(value: int | str | None) -> int | str | None:
    if isinstance(value, int) and not 0 <= value <= 9999:
        raise ValueError("must be between 0 and 9999")
    if isinstance(value, str) and len(value) > 8:
        raise ValueError("at most 8 characters")
    return value


# HP as OCR read it: a number, or the text ('12O'); never a boolean.
OcrHp = Annotated[int | str | None, BeforeValidator(_not_bool), AfterValidator(_hp_bounded)]


class Schema(BaseModel):
    """A response: fields in snake_case here, camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)


T = TypeVar("T")


class Listing(Schema, Generic[T]):
    """One page of a list, and how many there are in all."""

    data: list[T]
    page: int
    page_size: int
    count: int
    total_count: int

    @classmethod
    def of(cls, data: list[Any], *, page: int, page_size: int, total_count: int) -> Self:
        """The page of `data`: models, or their fields as plain values (then validated in
        one pass over the page, cheaper than model by model)."""
        return cls(data=data, page=page, page_size=page_size, count=len(data),
                   total_count=total_count)
