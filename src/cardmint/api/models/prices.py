"""What the price routes answer: the outcome of a feed, and a card's price history with
the market price of each of its printings and conditions."""

from __future__ import annotations

from typing import Self

from cardmint.api.models.base import Condition, Listing, Schema, Timestamp
from cardmint.inventory.prices import FeedResult


class RowError(Schema):
    """A feed row not stored, and why."""

    index: int
    field: str
    message: str


class Fed(Schema):
    received: int
    inserted: int
    duplicates: int
    rejected: int
    errors: list[RowError]

    @classmethod
    def of(cls, result: FeedResult, errors: list[RowError]) -> Self:
        return cls(received=result.received, inserted=result.inserted,
                   duplicates=result.duplicates, rejected=len(errors), errors=errors)


class OneFeed(Schema):
    data: Fed


class Observation(Schema):
    """One observed price."""

    id: int
    card_id: str
    variant_id: int
    condition: Condition
    source: str
    price_cents: int
    currency: str
    observed_at: Timestamp


class MarketPrice(Schema):
    """A printing's market price in one condition: its latest USD observation."""

    variant_id: int
    condition: Condition
    source: str
    price_cents: int
    currency: str
    observed_at: Timestamp


class CardPrices(Listing[Observation]):
    latest: list[MarketPrice]
