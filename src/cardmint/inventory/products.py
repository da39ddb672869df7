"""Products: what we sell, a card variant in a condition and language, with its SKU. The
one place SKUs are made (intake's stocking uses it too), and the one place a printing is
picked from what a caller says about it (a variant id, or a card and variant type)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cardmint import printings
from cardmint.db import Row, Transaction
from cardmint.errors import DatabaseError, ValidationError

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
VARIANTS_SQL = """
SELECT id, card_id, type, subtype, size, stamps, foil FROM card_variants
WHERE card_id = ANY($1::text[]) OR id = ANY($2::bigint[])
ORDER BY card_id, position
"""


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


@dataclass(frozen=True)
class VariantRef:
    """What a caller said about a printing: an id, or a card and the variant's parts."""

    variant_id: int | None = None
    card_id: str | None = None
    type: str | None = None
    subtype: str | None = None
    foil: str | None = None
    stamps: tuple[str, ...] | None = None
    size: str | None = None


class Variants:
    """The variants of the cards (and ids) a batch mentions, loaded with one query, so a
    feed of thousands of rows resolves without a query per row."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self.by_id: dict[int, Row] = {}
        self.by_card: dict[str, list[Row]] = {}
        for row in rows:
            self.by_id[row["id"]] = row
            self.by_card.setdefault(row["card_id"], []).append(row)

    @classmethod
    async def load(cls, ex: Any, refs: Iterable[VariantRef]) -> Variants:
        refs = list(refs)
        cards = sorted({r.card_id for r in refs if r.card_id})
        ids = sorted({r.variant_id for r in refs if r.variant_id})
        return cls(await ex.fetch(VARIANTS_SQL, cards, ids))

    def resolve(self, ref: VariantRef) -> tuple[str, int]:
        """(card_id, variant_id), or ValidationError naming the field at fault."""
        if ref.variant_id is not None:
            row = self.by_id.get(ref.variant_id)
            if row is None:
                raise ValidationError(f"no variant {ref.variant_id}", field="variantId")
            if ref.card_id is not None and row["card_id"] != ref.card_id:
                raise ValidationError(f"variant {ref.variant_id} is not a printing of "
                                      f"{ref.card_id}", field="variantId")
            return row["card_id"], row["id"]
        if ref.card_id is None:
            raise ValidationError("give variantId, or cardId and variantType", field="cardId")
        variants = self.by_card.get(ref.card_id)
        if not variants:
            raise ValidationError(f"no card {ref.card_id!r}", field="cardId")
        if ref.type is None:
            raise ValidationError("give variantType (or variantId)", field="variantType")
        return ref.card_id, pick(variants, ref)["id"]


def pick(variants: Sequence[Row], ref: VariantRef) -> Row:
    """The one variant matching every part given. A ref that names no size means a
    standard-size card (a feed's "normal" is never the jumbo). Among several matches,
    the plain one (no subtype, foil or stamps) if there is exactly one, since that is
    what a feed that says only "holo" means. Anything else is ambiguous: refused, with
    each choice named in full and its variantId, never guessed."""
    found = [v for v in variants if v["type"] == ref.type
             and (ref.subtype is None or v["subtype"] == ref.subtype)
             and (ref.foil is None or v["foil"] == ref.foil)
             and (ref.stamps is None or sorted(v["stamps"]) == sorted(ref.stamps))
             and (v["size"] or "standard") == (ref.size or "standard")]
    if not found:
        raise ValidationError(f"no {ref.type!r} printing of {ref.card_id} matches what was "
                              f"given; its printings: {choices(variants)}", field="variantType")
    if len(found) > 1:
        plain = [v for v in found if not v["subtype"] and not v["foil"] and not v["stamps"]]
        if len(plain) != 1:
            raise ValidationError(
                f"{len(found)} printings of {ref.card_id} match, so none was chosen: "
                f"{choices(found)}; give variantId (or variantSubtype, variantFoil, "
                f"variantStamps, variantSize)", field="variantType")
        found = plain
    return found[0]


def choices(variants: Sequence[Row]) -> str:
    """'variantId 12 = Holo · Shadowless · 1st Edition; variantId 13 = ...'."""
    return "; ".join(f"variantId {v['id']} = {describe(v)}" for v in variants)


def describe(v: Row) -> str:
    """The printing named in full (see cardmint.printings)."""
    return printings.name(v)
