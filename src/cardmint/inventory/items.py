"""Physical items: add, read, list, update (optimistic concurrency on `version`) and the
status machine. Every change writes its ledger row in the same transaction.

Statuses: IN_STOCK -reserve-> RESERVED -release-> IN_STOCK; IN_STOCK or RESERVED -sell->
SOLD; IN_STOCK or RESERVED -remove-> REMOVED. SOLD and REMOVED are final: a mistake is
corrected by a new item, so the ledger never has to explain a sale that un-happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from cardmint.db import Record, Transaction, one
from cardmint.errors import ConstraintViolation
from cardmint.inventory import fields, ledger
from cardmint.inventory.errors import Conflict, NotFound, StaleVersion, TransitionNotAllowed
from cardmint.inventory.products import VariantRef, Variants, ensure_product

STATUSES = ("IN_STOCK", "RESERVED", "SOLD", "REMOVED")
# action: (statuses it may start from, status it ends in, ledger event)
TRANSITIONS: dict[str, tuple[frozenset[str], str, str]] = {
    "reserve": (frozenset({"IN_STOCK"}), "RESERVED", "reserved"),
    "release": (frozenset({"RESERVED"}), "IN_STOCK", "released"),
    "sell": (frozenset({"IN_STOCK", "RESERVED"}), "SOLD", "sold"),
    "remove": (frozenset({"IN_STOCK", "RESERVED"}), "REMOVED", "removed"),
}
CERT_CONSTRAINT = "uq_inventory_items_grading_company_cert_number"

# The latest USD market price of the item's variant in its condition (any source but
# the shop's own asking price).
LATEST_PRICE = """
LEFT JOIN LATERAL (
    SELECT pr.price_cents, pr.source, pr.observed_at FROM prices pr
    WHERE pr.variant_id = p.variant_id AND pr.condition = p.condition AND pr.currency = 'USD'
      AND pr.source <> 'asking'
    ORDER BY pr.observed_at DESC, pr.id DESC LIMIT 1) price ON true
"""
SELECT_SQL = f"""
SELECT i.id, i.product_id, i.status, i.location, i.acquisition_cost_cents, i.acquired_on,
       i.grading_company, i.grade, i.cert_number, i.version, i.created_at, i.updated_at,
       p.sku, p.card_id, p.variant_id, p.condition, p.language,
       c.name AS card_name, c.set_id, c.local_id AS number,
       v.type AS variant_type, v.subtype AS variant_subtype, v.foil AS variant_foil,
       v.stamps AS variant_stamps, v.size AS variant_size,
       price.price_cents AS market_price_cents, price.observed_at AS priced_at
FROM inventory_items i
JOIN products p ON p.id = i.product_id
JOIN cards c ON c.id = p.card_id
JOIN card_variants v ON v.id = p.variant_id
{LATEST_PRICE}
"""
LOCK_SQL = "SELECT * FROM inventory_items WHERE id = $1 FOR UPDATE"
INSERT_SQL = """
INSERT INTO inventory_items (product_id, status, location, acquisition_cost_cents,
                             acquired_on, grading_company, grade, cert_number)
VALUES ($1, 'IN_STOCK', $2, $3, $4, $5, $6, $7)
RETURNING *
"""
CERT_TAKEN_SQL = """
SELECT id FROM inventory_items
WHERE grading_company = $1 AND cert_number = $2 AND id IS DISTINCT FROM $3
"""
# What PATCH may change, in the schema's names.
EDITABLE = ("location", "acquisition_cost_cents", "acquired_on", "grading_company", "grade",
            "cert_number", "condition", "language")


@dataclass(frozen=True)
class NewItem:
    variant: VariantRef
    condition: str = "NM"
    language: str = "en"
    location: str | None = None
    acquisition_cost_cents: int | None = None
    acquired_on: date | None = None
    grading_company: str | None = None
    grade: Decimal | float | str | None = None
    cert_number: str | None = None


@dataclass(frozen=True)
class Filters:
    set_id: str | None = None
    card_id: str | None = None
    condition: str | None = None
    status: str | None = None
    location: str | None = None
    graded: bool | None = None


async def add(tx: Transaction, new: NewItem, *, actor: str, reason: str | None = None,
              variants: Variants | None = None) -> dict[str, Any]:
    """A new IN_STOCK item and its 'acquired' ledger row."""
    fields.condition(new.condition)
    fields.language(new.language)
    location = fields.text(new.location, "location")
    cost = fields.cents(new.acquisition_cost_cents, "acquisitionCostCents")
    fields.day(new.acquired_on, "acquiredOn")
    company, grade, cert = fields.grading(new.grading_company, new.grade, new.cert_number)
    variants = variants or await Variants.load(tx, [new.variant])
    card_id, variant_id = variants.resolve(new.variant)
    await _cert_free(tx, company, cert, None)
    product_id, _ = await ensure_product(tx, card_id=card_id, variant_id=variant_id,
                                         condition=new.condition, language=new.language)
    row = await _guarded(tx.fetchrow(INSERT_SQL, product_id, location, cost, new.acquired_on,
                                     company, grade, cert))
    await ledger.record(tx, "acquired", before=None, after=row, actor=actor,
                        amount_cents=cost, reason=reason)
    return dict(row)


async def get(ex: Any, item_id: int) -> dict[str, Any] | None:
    row = await ex.fetchrow(SELECT_SQL + " WHERE i.id = $1", item_id)
    return dict(row) if row else None


async def require(ex: Any, item_id: int) -> dict[str, Any]:
    item = await get(ex, item_id)
    if item is None:
        raise NotFound(f"no item {item_id}")
    return item


async def update(tx: Transaction, item_id: int, *, version: int, changes: dict[str, Any],
                 actor: str, reason: str | None = None) -> dict[str, Any]:
    """Apply `changes` (a subset of EDITABLE) if the item is still at `version`. A change
    of location alone is a 'moved' ledger row; anything else 'adjusted'."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    before = await _lock(tx, item_id, version)
    product = one(await tx.fetchrow("SELECT card_id, variant_id, condition, language "
                                    "FROM products WHERE id = $1", before["product_id"]))
    current = {**dict(before), "condition": product["condition"],
               "language": product["language"]}
    wanted = {**current, **changes}
    fields.condition(wanted["condition"])
    fields.language(wanted["language"])
    wanted["location"] = fields.text(wanted["location"], "location")
    fields.cents(wanted["acquisition_cost_cents"], "acquisitionCostCents")
    if "acquired_on" in changes:  # an old item keeps whatever date it was stored with
        fields.day(wanted["acquired_on"], "acquiredOn")
    company, grade, cert = fields.grading(wanted["grading_company"], wanted["grade"],
                                          wanted["cert_number"])
    wanted.update(grading_company=company, grade=grade, cert_number=cert)
    diff = {k: [_plain(current[k]), _plain(wanted[k])] for k in EDITABLE
            if _plain(current[k]) != _plain(wanted[k])}
    if not diff:
        return dict(before)  # nothing changes: no new version, no ledger row
    await _cert_free(tx, company, cert, item_id)
    product_id = before["product_id"]
    if "condition" in diff or "language" in diff:
        product_id, _ = await ensure_product(
            tx, card_id=product["card_id"], variant_id=product["variant_id"],
            condition=wanted["condition"], language=wanted["language"])
    after = await _guarded(tx.fetchrow(
        "UPDATE inventory_items SET product_id = $2, location = $3,"
        " acquisition_cost_cents = $4, acquired_on = $5, grading_company = $6, grade = $7,"
        " cert_number = $8, version = version + 1, updated_at = now()"
        " WHERE id = $1 RETURNING *",
        item_id, product_id, wanted["location"], wanted["acquisition_cost_cents"],
        wanted["acquired_on"], company, grade, cert))
    event = "moved" if set(diff) == {"location"} else "adjusted"
    await ledger.record(tx, event, before=before, after=after, actor=actor, reason=reason,
                        changes=diff)
    return dict(after)


async def transition(tx: Transaction, item_id: int, action: str, *, version: int | None,
                     actor: str, amount_cents: int | None = None,
                     reason: str | None = None) -> dict[str, Any]:
    """reserve / release / sell / remove, if the item's status allows it."""
    sources, target, event = TRANSITIONS[action]
    before = await _lock(tx, item_id, version)
    if before["status"] not in sources:
        raise TransitionNotAllowed(f"cannot {action} an item that is {before['status']} "
                                   f"(allowed from {', '.join(sorted(sources))})")
    after = one(await tx.fetchrow(
        "UPDATE inventory_items SET status = $2, version = version + 1, updated_at = now()"
        " WHERE id = $1 RETURNING *", item_id, target))
    await ledger.record(tx, event, before=before, after=after, actor=actor,
                        amount_cents=amount_cents, reason=reason)
    return dict(after)


# How a page's ids are found: by walking an index in id order and keeping the matches
# until the page is full (about depth / share-of-matches rows), or by collecting every
# match through a selective index and sorting them (every match). A set's items, a
# status's and the graded items have indexes in id order holding the other filters'
# columns (migration 0012).
# A shelf holding at most this many matching items is collected (an index-only scan of
# the shelf: a few ms at most); a bigger one is walked along the primary key unless the
# walk would pass more rows than the shelf holds (a deep page).
SHELF_SORT_MAX = 20_000

# Where each filter looks, by what is read: the items (their own copies of the product's
# set and condition, migration 0012), per product totals, per set totals, per shelf totals.
ITEMS = {"set_id": "i.set_id", "card_id": "p.card_id", "condition": "i.condition",
         "status": "i.status", "location": "lower(i.location)",
         "graded": "i.grading_company"}
PRODUCT_TOTALS = {"set_id": "c.set_id", "card_id": "p.card_id", "condition": "p.condition",
                  "status": "t.status"}
SET_TOTALS = {"set_id": "t.set_id", "condition": "t.condition", "status": "t.status"}
SHELF_TOTALS = {"condition": "t.condition", "status": "t.status",
                "location": "t.location_key"}
# The planner's own count of the items, for the walk-or-collect choice (approximate).
TABLE_SIZE_SQL = "(SELECT reltuples FROM pg_class WHERE oid = 'inventory_items'::regclass)"


# The page's rows, priced, by their ids: one fixed statement, so PostgreSQL plans it once
# per connection (a generic plan) instead of planning the six-way join for every page.
PAGE_ROWS_SQL = f"{SELECT_SQL} WHERE i.id = ANY($1::bigint[]) ORDER BY i.id"


async def listing(ex: Any, filters: Filters, *, page: int, page_size: int,
                  after: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of items and the number matching, the number from totals kept with every
    change. Without a shelf, the page's ids and the number in one statement; with one,
    the number first (an empty shelf costs nothing more, and its size chooses how the
    page is found: see `collects`), then the ids. Then only those rows, joined and priced
    (pricing every match before the limit took seconds at 1M items). With `after` (an
    item id) the page is the next `page_size` items after it (keyset: no OFFSET walk
    however deep); `page` is then not used. The rows are read as they are when asked
    for, after their ids."""
    if filters.location is None:
        found = await ex.fetchrow(*listing_query(filters, page=page, page_size=page_size,
                                                 after=after, collect=collects(filters),
                                                 with_total=True))
        ids, total = found["ids"], int(found["total"])
    else:
        row = await ex.fetchrow(*count_query(filters))
        total = int(row["total"])
        depth = page_size if after is not None else page * page_size
        if depth - page_size >= total:  # nothing, or past the end
            return [], total
        collect = collects(filters, total=total, size=max(float(row["size"] or 0), total),
                           depth=depth)
        ids = await ex.fetchval(*listing_query(filters, page=page, page_size=page_size,
                                               after=after, collect=collect))
    if not ids:  # past the end
        return [], total
    return [dict(row) for row in await ex.fetch(PAGE_ROWS_SQL, ids)], total


def collects(filters: Filters, *, total: int = 0, size: float = 0, depth: int = 0) -> bool:
    """Whether a page's ids are collected and sorted rather than walked in id order. A set,
    a status and the graded items are walked along their own indexes, a card's items
    collected through its products' index, anything else without a shelf walked along the
    primary key (a deep page of a rare status or condition walks far: `after`). A shelf is
    collected when its `total` matches are few or a walk `depth` rows deep would pass more
    rows than that (`size`: all items, of which the matches are a share)."""
    if filters.set_id is not None or filters.graded:
        return False
    if filters.card_id is not None:
        return True
    if filters.location is None:
        return False
    return total <= SHELF_SORT_MAX or depth * size / total > total


def listing_query(filters: Filters, *, page: int, page_size: int, after: int | None = None,
                  collect: bool = False, with_total: bool = False) -> tuple[Any, ...]:
    """The statement of a page's ids (an array, in id order) and, `with_total`, the
    number matching beside them, with its arguments (bench/scale.py EXPLAINs it).
    `collect`: every match gathered and sorted, not an index walked in id order (see
    `collects`)."""
    where, args = _where(filters)
    source = _source(filters)
    offset = (page - 1) * page_size
    if after is not None:
        args = [*args, after]
        where += f" AND i.id > ${len(args)}"
        offset = 0
    # `i.id + 0` is not the key's column: the planner cannot walk an index in id order
    # and reads the few ids a selective index gives instead.
    order = "i.id + 0" if collect else "i.id"
    # the count's arguments are the filters', in the same order (see `_where`)
    total = f", ({_count_sql(filters)[0]}) AS total" if with_total else ""
    sql = (f"SELECT ARRAY(SELECT i.id FROM {source} WHERE {where} ORDER BY {order} "
           f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}) AS ids{total}")
    return (sql, *args, page_size, offset)


async def count(ex: Any, filters: Filters) -> int:
    """How many items match (see `_count_sql`)."""
    sql, args = _count_sql(filters)
    return int(await ex.fetchval(sql, *args))


def count_query(filters: Filters) -> tuple[Any, ...]:
    """The statement of the number matching (`total`) and the planner's count of all items
    (`size`), with its arguments (bench/scale.py EXPLAINs it)."""
    sql, args = _count_sql(filters)
    return (f"SELECT ({sql}) AS total, {TABLE_SIZE_SQL} AS size", *args)


def _count_sql(filters: Filters) -> tuple[str, list[Any]]:
    """The count of matching items, from totals kept in the same transaction as every
    change of an item: per shelf, condition and status when a shelf is asked without a
    set or card; per set, condition and status when no card or shelf is asked; per product
    and status when a card is (and no shelf). A shelf with a set or a card is counted item
    by item (bounded by the set's index or the card's products')."""
    column = {None: "t.items", True: "t.graded", False: "t.items - t.graded"}[filters.graded]
    by_product = (filters.set_id, filters.card_id) != (None, None)
    if filters.location is not None and not by_product:
        table, columns = "inventory_shelf_totals t", SHELF_TOTALS
    elif filters.location is not None:
        where, args = _where(filters)
        return f"SELECT count(*) FROM {_source(filters)} WHERE {where}", args
    elif filters.card_id is None:
        table, columns = "inventory_set_totals t", SET_TOTALS
    else:
        table, columns = _totals_source(filters), PRODUCT_TOTALS
    where, args = _where(filters, columns)
    return f"SELECT coalesce(sum({column}), 0)::bigint FROM {table} WHERE {where}", args


def _totals_source(f: Filters) -> str:
    """Per product totals, joined to products and cards only when a filter looks there."""
    source = "inventory_totals t"
    if f.set_id is not None or f.card_id is not None or f.condition is not None:
        source += " JOIN products p ON p.id = t.product_id"
    if f.set_id is not None:
        source += " JOIN cards c ON c.id = p.card_id"
    return source


def _source(f: Filters) -> str:
    """The items, joined to products only for a card (set and condition are the item's)."""
    return ("inventory_items i" if f.card_id is None
            else "inventory_items i JOIN products p ON p.id = i.product_id")


async def value(ex: Any, filters: Filters) -> dict[str, Any]:
    """Market value of the items held (IN_STOCK and RESERVED unless `filters` says which):
    each at the latest price of its variant and condition; items without one are counted."""
    # Items are counted per product first and each product is priced once: the latest
    # price is a lookup per (variant, condition), and there are far fewer products than
    # items (bench/value.py, 1M items, 800,000 held: 1.75 s -> 0.76 s).
    # Without a shelf or graded filter the counts per product come from inventory_totals
    # (one row per product and status) instead of every item.
    by_totals = filters.location is None and filters.graded is None
    columns = PRODUCT_TOTALS if by_totals else ITEMS
    where, args = _where(filters, columns)
    if filters.status is None:
        where += f" AND {columns['status']} IN ('IN_STOCK', 'RESERVED')"
    if by_totals:
        held = (f"SELECT t.product_id, sum(t.items) AS n, sum(t.cost_cents) AS cost,"
                f" sum(t.with_cost) AS with_cost FROM {_totals_source(filters)}"
                f" WHERE {where} GROUP BY t.product_id HAVING sum(t.items) > 0")
    else:
        held = (f"SELECT i.product_id, count(*) AS n, sum(i.acquisition_cost_cents) AS cost,"
                f" count(i.acquisition_cost_cents) AS with_cost FROM {_source(filters)}"
                f" WHERE {where} GROUP BY i.product_id")
    row = await ex.fetchrow(
        f"WITH held AS ({held})"
        f" SELECT coalesce(sum(h.n), 0)::bigint AS items,"
        f" coalesce(sum(h.n) FILTER (WHERE price.price_cents IS NOT NULL), 0)::bigint AS priced,"
        f" coalesce(sum(h.n * price.price_cents), 0) AS value_cents,"
        f" coalesce(sum(h.cost), 0) AS cost_cents, coalesce(sum(h.with_cost), 0)::bigint"
        f" AS with_cost FROM held h JOIN products p ON p.id = h.product_id {LATEST_PRICE}",
        *args)
    return {"items": row["items"], "priced": row["priced"],
            "unpriced": row["items"] - row["priced"], "value_cents": int(row["value_cents"]),
            "cost_cents": int(row["cost_cents"]),
            "without_cost": row["items"] - row["with_cost"], "currency": "USD"}


def _where(f: Filters, columns: dict[str, str] = ITEMS) -> tuple[str, list[Any]]:
    """WHERE text and its arguments, each filter on its column in `columns` (ITEMS or one
    of the totals). A totals table has no graded condition: it sums graded as a column."""
    clauses, args = ["true"], []
    for name in ("set_id", "card_id", "condition", "status"):
        value = getattr(f, name)
        if value is not None:
            args.append(value)
            clauses.append(f"{columns[name]} = ${len(args)}")
    if f.location is not None:
        # "binder" finds "Binder 3" and "BINDER 12": people type locations as they recall
        # them. A prefix match, LIKE's own characters taken literally.
        args.append(re.sub(r"([\\%_])", r"\\\1", f.location.lower()) + "%")
        clauses.append(f"{columns['location']} LIKE ${len(args)}")
    if f.graded is not None and "graded" in columns:
        clauses.append(f"{columns['graded']} IS {'NOT ' if f.graded else ''}NULL")
    return " AND ".join(clauses), args


async def _lock(tx: Transaction, item_id: int, version: int | None) -> Record:
    """The item's row, locked until commit, so a concurrent change with the same
    If-Match waits here and then sees the new version (and gets its 412)."""
    row = await tx.fetchrow(LOCK_SQL, item_id)
    if row is None:
        raise NotFound(f"no item {item_id}")
    if version is not None and row["version"] != version:
        raise StaleVersion(item_id, version, row["version"])
    return row


async def _cert_free(tx: Transaction, company: str | None, cert: str | None,
                     item_id: int | None) -> None:
    if cert is not None and await tx.fetchval(CERT_TAKEN_SQL, company, cert, item_id):
        raise Conflict(f"{company} cert {cert} is already in the inventory",
                       field="certNumber")


async def _guarded(query: Any) -> Any:
    """A racing insert of the same cert passes the check above; the unique key stops it."""
    try:
        return await query
    except ConstraintViolation as exc:
        if exc.constraint == CERT_CONSTRAINT:
            raise Conflict("this cert number is already in the inventory",
                           field="certNumber") from exc
        raise


def _plain(value: Any) -> Any:
    """JSON-able for the ledger's details and comparable across Decimal/str/float."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # 10.0 and 10 are the same grade
    if isinstance(value, date):
        return value.isoformat()
    return value
