"""Turning an identified capture into inventory: its product (card x variant x condition x
language, with a SKU) and one physical item, with the ledger's 'acquired' row written in
the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from cardmint.db import Transaction
from cardmint.inventory.products import ensure_product
from cardmint.inventory.products import make_sku as make_sku  # re-exported for callers

DEFAULT_CONDITION = "NM"
DEFAULT_LANGUAGE = "en"

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


async def receive(tx: Transaction, *, card_id: str, variant_id: int, condition: str,
                  language: str, location: str | None, acquired_on: date | None, actor: str,
                  reason: str, details: dict[str, Any]) -> Stocked:
    """One new IN_STOCK item of the product, and its 'acquired' ledger row."""
    product_id, sku = await ensure_product(tx, card_id=card_id, variant_id=variant_id,
                                           condition=condition, language=language)
    item_id = await tx.fetchval(ITEM_SQL, product_id, location, acquired_on)
    await tx.execute(LEDGER_SQL, item_id, product_id, location, actor, reason, details)
    return Stocked(item_id, product_id, sku)
