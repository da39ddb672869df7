"""What the inventory routes answer: items, their ledger, the collection's value and the
outcome of a CSV import."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal, Self

from pydantic import Field

from cardmint import printings
from cardmint.api.models.base import Condition, Listing, Schema, Timestamp

Status = Literal["IN_STOCK", "RESERVED", "SOLD", "REMOVED"]
Grader = Literal["PSA", "BGS", "CGC", "SGC"]


class ItemVariant(Schema):
    id: int
    type: str
    subtype: str | None
    foil: str | None
    stamps: list[str]
    size: str | None
    name: str = Field(description="The printing named in full: finish, variation, "
                      "edition and other stamps, size, foil")


class Grading(Schema):
    company: Grader
    grade: float
    cert_number: str | None


class Item(Schema):
    """One physical card. `version` is its ETag: PATCH and the status actions name it."""

    id: int
    sku: str
    product_id: int
    card_id: str
    card_name: str
    set_id: str
    number: str
    variant: ItemVariant
    condition: Condition
    language: str
    status: Status
    location: str | None
    acquisition_cost_cents: int | None
    acquired_on: date | None
    grading: Grading | None
    market_price_cents: int | None = Field(
        description="The latest USD price of its variant and condition")
    priced_at: Timestamp | None
    version: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, i: dict[str, Any]) -> Self:
        """From an `inventory.items` row."""
        return cls.model_validate({
            **i, "variant": {"id": i["variant_id"], "type": i["variant_type"],
                             "subtype": i["variant_subtype"], "foil": i["variant_foil"],
                             "stamps": i["variant_stamps"], "size": i["variant_size"],
                             "name": printings.name({
                                 "type": i["variant_type"], "subtype": i["variant_subtype"],
                                 "foil": i["variant_foil"], "stamps": i["variant_stamps"],
                                 "size": i["variant_size"]})},
            "grading": None if i["grading_company"] is None else {
                "company": i["grading_company"], "grade": float(i["grade"]),
                "cert_number": i["cert_number"]}})


class OneItem(Schema):
    data: Item


class ItemList(Listing[Item]):
    pass


class LedgerEntry(Schema):
    id: int
    item_id: int
    product_id: int
    event: str = Field(description="acquired, adjusted, reserved, released, sold, removed")
    from_status: Status | None
    to_status: Status | None
    from_location: str | None
    to_location: str | None
    amount_cents: int | None = Field(description="Cost when acquired, price when sold")
    actor: str
    reason: str | None
    occurred_at: Timestamp
    changes: dict[str, list[Any]] | None = Field(
        description="An adjustment's changes: column -> [before, after]")

    @classmethod
    def of(cls, e: dict[str, Any]) -> Self:
        """From an `inventory.ledger` row."""
        return cls.model_validate({**e, "changes": e["details"].get("changes")})


class Ledger(Schema):
    data: list[LedgerEntry]
    count: int


class Value(Schema):
    """Market value of the items matched, at the latest USD price of each item's variant
    and condition; `unpriced` counts those without one, `withoutCost` those without a
    known acquisition cost."""

    items: int
    priced: int
    unpriced: int
    value_cents: int
    cost_cents: int
    without_cost: int
    currency: str


class OneValue(Schema):
    data: Value
