"""The base of every request body: unknown fields refused, and text PostgreSQL cannot
store refused here, by field, instead of failing at the database."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


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
