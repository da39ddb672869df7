"""What every request body and every response model is built on.

Request bodies (`Model`): unknown fields refused, and text PostgreSQL cannot store
refused here, by field, instead of failing at the database. Responses (`Schema`): camelCase
on the wire, built in Python by field name, serialised by FastAPI straight to JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

Condition = Literal["NM", "LP", "MP", "HP", "DMG"]

# `datetime.isoformat()`, as the API has always sent: "+00:00", where pydantic writes "Z".
Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time"})]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """NUL or a lone surrogate (from a JSON escape) anywhere in a string, a list's
        strings, or a mapping's keys and values."""
        parts = ([*value.keys(), *value.values()] if isinstance(value, dict)
                 else value if isinstance(value, list) else [value])
        for part in parts:
            if isinstance(part, str):
                if "\x00" in part:
                    raise ValueError("must not contain NUL characters")
                try:
                    part.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("must be valid Unicode") from None
        return value


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
