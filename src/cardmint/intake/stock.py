"""Turning an identified capture into inventory: its product (card x variant x condition x
language, with a SKU) and one physical item, with the ledger's 'acquired' row written in
the same transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from cardmint.db import Transaction
from cardmint.errors import DatabaseError

DEFAULT_CONDITION = "NM"
DEFAULT_LANGUAGE = "en"

# Products are unique per (variant, condition, language); a racing insert of the same one
# waits for the other transaction and then finds its row.
PRODUCT_SQL = """
INSERT INTO products (card_id, variant_id, condition, language, sku)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING id, sku
"""
FIND_PRODUCT_SQL = """
SELECT id, sku FROM products WHERE variant_id = $1 AND condition = $2 AND language = $3
"""
ITEM_SQL = """
INSERT INTO inventory_items (product_id, status, location, acquired_on)
VALUES ($1, 'IN_STOCK', $2, $3)
RETURNING id
"""
LEDGER_SQL = """
INSERT INTO inventory_ledger (item_id, product_id, event, to_status, to_location, actor,
                              reason, details)
VALUES ($1, $2, 'acquired', 'IN_STOCK', $3, $4, $5, $6)
"""


@dataclass(frozen=True)
class Stocked:
    item_id: int
    product_id: int
    sku: str

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "product_id": self.product_id, "sku": self.sku}


def make_sku(card_id: str, variant_id: int, condition: str, language: str) -> str:
    """Readable and unique: the card id names the card, the variant id the printing."""
    card = re.sub(r"[^A-Za-z0-9.\-]", "", card_id)
    return f"{card}-V{variant_id}-{condition}-{language}".upper()


async def ensure_product(tx: Transaction, *, card_id: str, variant_id: int, condition: str,
                         language: str) -> tuple[int, str]:
    """The product's (id, sku), created if it does not exist yet."""
    sku = make_sku(card_id, variant_id, condition, language)
    row = await tx.fetchrow(PRODUCT_SQL, card_id, variant_id, condition, language, sku)
    if row is None:
        row = await tx.fetchrow(FIND_PRODUCT_SQL, variant_id, condition, language)
    if row is None:  # only if another product took this SKU, which the format rules out
        raise DatabaseError(f"product {sku} could neither be created nor found")
    return row["id"], row["sku"]


async def receive(tx: Transaction, *, card_id: str, variant_id: int, condition: str,
                  language: str, location: str | None, acquired_on: date | None, actor: str,
                  reason: str, details: dict[str, Any]) -> Stocked:
    """One new IN_STOCK item of the product, and its 'acquired' ledger row."""
    product_id, sku = await ensure_product(tx, card_id=card_id, variant_id=variant_id,
                                           condition=condition, language=language)
    item_id = await tx.fetchval(ITEM_SQL, product_id, location, acquired_on)
    await tx.execute(LEDGER_SQL, item_id, product_id, location, actor, reason, details)
    return Stocked(item_id, product_id, sku)
