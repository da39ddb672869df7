"""Market prices: a bulk feed, a card's price history, and the latest price of a product.

The feed's policy: a bad row refuses only itself. Every row is checked here first (each
bad one reported by index with the field and why), and the good ones are written in one
statement; should the database still refuse that statement, each good row is tried on
its own so that only the rows it refuses are reported. A row is identified by (source,
variant, condition, observed_at): sending it again is a no-op, so a feed may be replayed;
the first observation stored wins. An observation may not lie in the future beyond
MAX_SKEW (a far-future price would be the "latest" for years).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cardmint import inputs
from cardmint.db import Transaction
from cardmint.errors import ValidationError
from cardmint.inventory import fields
from cardmint.inventory.products import VariantRef, Variants

MAX_ROWS = 5000
CURRENCY = "USD"
# The shop's own asking price (a file's TCG Marketplace Price, a price entered as ours):
# kept beside the market prices, never read as one (value, review rules, the latest price).
ASKING_SOURCE = "asking"
MAX_SKEW = timedelta(minutes=5)  # clocks differ; a feed from the future does not

INSERT_SQL = """
INSERT INTO prices (card_id, variant_id, condition, source, price_cents, currency, observed_at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                     $6::text[], $7::timestamptz[])
ON CONFLICT (variant_id, condition, source, observed_at) DO NOTHING
RETURNING id
"""
HISTORY_SQL = """
SELECT id, card_id, variant_id, condition, source, price_cents, currency, observed_at,
       count(*) OVER () AS total_count
FROM prices
WHERE card_id = $1 AND ($2::bigint IS NULL OR variant_id = $2)
  AND ($3::text IS NULL OR condition = $3) AND ($4::text IS NULL OR source = $4)
ORDER BY observed_at DESC, id DESC
LIMIT $5 OFFSET $6
"""
LATEST_SQL = """
SELECT DISTINCT ON (variant_id, condition) variant_id, condition, source, price_cents,
       currency, observed_at
FROM prices WHERE card_id = $1 AND currency = 'USD' AND source <> 'asking'
ORDER BY variant_id, condition, observed_at DESC, id DESC
"""


@dataclass(frozen=True)
class Price:
    card_id: str
    variant_id: int
    condition: str
    source: str
    price_cents: int
    currency: str
    observed_at: datetime


@dataclass
class FeedResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def parse_row(raw: Any, default_source: str | None, *, now: datetime | None = None
              ) -> tuple[VariantRef, dict[str, Any]]:
    """A feed row's variant reference and checked values, or ValidationError."""
    if not isinstance(raw, dict):
        raise ValidationError("must be an object", field=None)
    known = {"variantId", "cardId", "variantType", "variantSubtype", "variantFoil",
             "variantStamps", "variantSize", "condition", "priceCents", "currency", "source",
             "observedAt"}
    extra = sorted(set(raw) - known)
    if extra:
        raise ValidationError(f"unknown field {extra[0]!r}", field=extra[0])
    variant_id = raw.get("variantId")
    if variant_id is not None and (isinstance(variant_id, bool) or not isinstance(
            variant_id, int) or not 1 <= variant_id < 2**63):
        raise ValidationError("must be a positive integer", field="variantId")
    stamps = raw.get("variantStamps")
    if stamps is not None and (not isinstance(stamps, list) or len(stamps) > 8 or not all(
            isinstance(s, str) and 0 < len(s) <= 64 for s in stamps)):
        raise ValidationError("must be a list of up to 8 stamps", field="variantStamps")
    ref = VariantRef(
        variant_id=variant_id, card_id=fields.text(raw.get("cardId"), "cardId", max_length=64),
        type=fields.text(raw.get("variantType"), "variantType", max_length=64),
        subtype=fields.text(raw.get("variantSubtype"), "variantSubtype", max_length=64),
        foil=fields.text(raw.get("variantFoil"), "variantFoil", max_length=64),
        stamps=tuple(stamps) if stamps is not None else None,
        size=fields.text(raw.get("variantSize"), "variantSize", max_length=64))
    currency = inputs.currency(raw.get("currency", CURRENCY))
    source = fields.text(raw.get("source", default_source), "source", max_length=64,
                         required=True)
    observed_at = fields.instant(raw.get("observedAt"), "observedAt")
    latest = (now or datetime.now(UTC)) + MAX_SKEW
    if observed_at > latest:
        raise ValidationError(f"is in the future (after {latest.isoformat(timespec='seconds')}"
                              ")", field="observedAt")
    return ref, {
        "condition": fields.condition(raw.get("condition", "NM")),
        "price_cents": fields.cents(raw.get("priceCents"), "priceCents", required=True),
        "currency": currency, "source": source, "observed_at": observed_at,
    }


async def ingest(tx: Transaction, rows: list[Any], *, source: str | None = None,
                 now: datetime | None = None) -> FeedResult:
    """Check every row, then write the good ones in one statement. Bad rows are listed
    as {index, field, message}; they never stop the good ones."""
    if len(rows) > MAX_ROWS:
        raise ValidationError(f"at most {MAX_ROWS} rows per request", field="rows")
    result = FeedResult(received=len(rows))
    parsed: list[tuple[int, VariantRef, dict[str, Any]]] = []
    for index, raw in enumerate(rows):
        try:
            ref, values = parse_row(raw, source, now=now)
        except ValidationError as exc:
            result.errors.append(_error(index, exc))
            continue
        parsed.append((index, ref, values))
    variants = await Variants.load(tx, [ref for _, ref, _ in parsed])
    good: list[tuple[int, Price]] = []
    for index, ref, values in parsed:
        try:
            card_id, variant_id = variants.resolve(ref)
        except ValidationError as exc:
            result.errors.append(_error(index, exc))
            continue
        good.append((index, Price(card_id=card_id, variant_id=variant_id, **values)))
    if good:
        try:
            async with tx.savepoint():
                result.inserted = await _insert(tx, [p for _, p in good])
            stored = len(good)
        except ValidationError:  # a rule only the database knew: find its rows
            stored = 0
            for index, price in good:
                try:
                    async with tx.savepoint():
                        result.inserted += await _insert(tx, [price])
                    stored += 1
                except ValidationError as exc:
                    result.errors.append(_error(index, exc))
        result.duplicates = stored - result.inserted
    result.errors.sort(key=lambda e: e["index"])
    return result


async def _insert(tx: Transaction, rows: list[Price]) -> int:
    """Write `rows` in one statement; how many were new."""
    columns = list(zip(*((p.card_id, p.variant_id, p.condition, p.source, p.price_cents,
                          p.currency, p.observed_at) for p in rows), strict=True))
    return len(await tx.fetch(INSERT_SQL, *map(list, columns)))


async def history(ex: Any, card_id: str, *, variant_id: int | None, condition: str | None,
                  source: str | None, page: int, page_size: int
                  ) -> tuple[list[dict[str, Any]], int]:
    rows = await ex.fetch(HISTORY_SQL, card_id, variant_id, condition, source, page_size,
                          (page - 1) * page_size, stale_ok=True)
    total = rows[0]["total_count"] if rows else 0
    if not rows and page > 1:
        total = await ex.fetchval(
            "SELECT count(*) FROM prices WHERE card_id = $1 AND ($2::bigint IS NULL OR "
            "variant_id = $2) AND ($3::text IS NULL OR condition = $3) AND ($4::text IS NULL"
            " OR source = $4)", card_id, variant_id, condition, source, stale_ok=True)
    return [dict(r) for r in rows], total


async def latest_by_product(ex: Any, card_id: str) -> list[dict[str, Any]]:
    """The market price of each (variant, condition) of a card: its latest USD price."""
    return [dict(r) for r in await ex.fetch(LATEST_SQL, card_id, stale_ok=True)]


def _error(index: int, exc: ValidationError) -> dict[str, Any]:
    return {"index": index, "field": exc.field, "message": str(exc)}
