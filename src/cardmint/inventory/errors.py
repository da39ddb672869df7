"""What inventory operations refuse, each a kind the API answers differently."""

from __future__ import annotations

from cardmint.errors import CardmintError, ValidationError


class NotFound(CardmintError):
    """No such item (404)."""


class StaleVersion(CardmintError):
    """The caller's If-Match names a version the item no longer has (412)."""

    def __init__(self, item_id: int, expected: int, current: int) -> None:
        super().__init__(f"item {item_id} is at version {current}, not {expected}")
        self.current = current


class TransitionNotAllowed(CardmintError):
    """The item's status does not allow the requested change (409)."""


class Conflict(ValidationError):
    """The write would break a uniqueness rule, e.g. a cert number per company (409)."""
