"""Import a vendor file: `add` (every row adds its copies) or `sync` (the file states the
counts: what differs is added or removed, importing the same file twice changes nothing;
items the file does not mention are reported, and removed only with `prune`). A dry run
does all of it in a savepoint and rolls it back, so its per-row answer is exactly what the
import would do. Rows are streamed and folded into one total per item kind (printing,
condition, language, location, grade): memory grows with the kinds, not the rows.

A row that cannot be read or matched never fails the file: it is reported with its line and
reason (and kept, up to REVIEW_LIMIT, for the review queue).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from cardmint.db import Transaction
from cardmint.errors import ValidationError
from cardmint.inventory.interchange import layouts
from cardmint.inventory.interchange.layouts import VendorRow
from cardmint.inventory.interchange.matching import (
    CatalogIndex,
    Match,
    NoMatch,
    Variant,
    label,
)
from cardmint.inventory.prices import ASKING_SOURCE
from cardmint.inventory.products import make_sku

Mode = Literal["add", "sync"]
MODES = ("add", "sync")
RESULT_LIMIT = 10_000  # per-row answers kept in a report; the counts cover every row
REVIEW_LIMIT = 1_000
MISSING_LIMIT = 1_000
CHUNK = 2_000
STATEMENT_TIMEOUT_MS = 600_000

# printing, condition, language, location, grader, grade; and in `add` also the cost and
# date, so that an export's rows (one per cost and date) come back as they went.
Key = tuple[int, str, str, str | None, str | None, Decimal | None, Decimal | None,
            date | None]


@dataclass(slots=True)
class RowResult:
    line: int
    status: str  # matched, skipped, unmatched, error
    reason: str | None = None
    field: str | None = None
    card_id: str | None = None
    card_name: str | None = None
    variant_id: int | None = None
    printing: str | None = None
    condition: str | None = None
    language: str | None = None
    quantity: int | None = None
    matched_by: str | None = None
    action: str | None = None
    note: str | None = None


@dataclass
class Missing:
    card_id: str
    card_name: str
    printing: str
    condition: str
    location: str | None
    grade: str | None
    quantity: int


@dataclass
class ImportReport:
    format: str
    mode: str
    dry_run: bool
    rows: int = 0
    matched: int = 0
    skipped: int = 0
    unmatched: int = 0
    errors: int = 0
    items_added: int = 0
    items_removed: int = 0
    items_unchanged: int = 0
    missing_items: int = 0
    pruned: bool = False
    skus_learned: int = 0
    results: list[RowResult] = field(default_factory=list)
    results_truncated: bool = False
    missing: list[Missing] = field(default_factory=list)
    review: list[VendorRow] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.unmatched + self.errors


@dataclass(slots=True)
class _Kind:
    card_id: str
    quantity: int = 0
    target: int = 0
    cost: Decimal | None = None
    acquired_on: date | None = None
    results: list[int] = field(default_factory=list)


class _DryRun(Exception):
    """Raised inside the savepoint of a dry run so that all of it is undone."""


async def run(tx: Transaction, rows: layouts.Reader, *, mode: str, actor: str,
              dry_run: bool = False, prune: bool = False, review: bool = False,
              scope_location: str | None = None,
              progress: Callable[[int], None] | None = None,
              index: CatalogIndex | None = None) -> ImportReport:
    if mode not in MODES:
        raise ValidationError(f"mode must be one of {', '.join(MODES)}", field="mode")
    report = ImportReport(rows.format, mode, dry_run)
    # a file is a batch: its statements (100k rows' items) may outlast the API's timeout
    await tx.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    tx.allow(STATEMENT_TIMEOUT_MS)  # and the client waits as long
    catalog = index or await CatalogIndex.load(tx)
    kinds: dict[Key, _Kind] = {}
    skus: dict[int, tuple[int, str, str, int | None]] = {}
    asking: dict[tuple[int, str], tuple[str, int]] = {}
    _read(rows, catalog, report, kinds, skus, asking, review, progress, mode)
    try:
        async with tx.savepoint():
            await _apply(tx, report, kinds, mode=mode, actor=actor, prune=prune,
                         scope_location=scope_location, fmt=rows.format)
            report.skus_learned = await _learn(tx, skus, rows.format)
            await _asking(tx, asking)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return report


def _read(rows: Iterable[VendorRow | tuple[int, ValidationError]], catalog: CatalogIndex,
          report: ImportReport, kinds: dict[Key, _Kind],
          skus: dict[int, tuple[int, str, str, int | None]],
          asking: dict[tuple[int, str], tuple[str, int]], review: bool,
          progress: Callable[[int], None] | None, mode: str) -> None:
    for item in rows:
        report.rows += 1
        if progress is not None and report.rows % 1000 == 0:
            progress(report.rows)
        if isinstance(item, tuple):
            line, exc = item
            report.errors += 1
            _keep(report, RowResult(line, "error", str(exc), exc.field), force=True)
            continue
        row = layouts.finish(item)
        if row.skip is not None:
            report.skipped += 1
            _keep(report, RowResult(row.line, "skipped", row.skip, quantity=row.quantity))
            continue
        found = catalog.match(row)
        if isinstance(found, NoMatch):
            report.unmatched += 1
            _keep(report, RowResult(row.line, "unmatched", found.reason, found.field,
                                    quantity=row.quantity), force=True)
            if review and len(report.review) < REVIEW_LIMIT:
                report.review.append(row)
            continue
        report.matched += 1
        index = _keep(report, _matched(row, found))
        add = mode == "add"
        key: Key = (found.variant.id, found.condition, found.language, row.location,
                    row.grading_company, row.grade, row.cost if add else None,
                    row.acquired_on if add else None)
        kind = kinds.get(key)
        if kind is None:
            kind = kinds[key] = _Kind(found.card.id, cost=row.cost,
                                      acquired_on=row.acquired_on)
        kind.quantity += row.quantity
        kind.target += row.target
        if index is not None:
            kind.results.append(index)
        if row.sku is not None and found.by != "TCGplayer SKU":
            skus[row.sku] = (found.variant.id, found.condition, found.language,
                             found.variant.product_id)
        if row.price is not None and row.price >= Decimal("0.01"):
            asking[(found.variant.id, found.condition)] = (found.card.id, _cents(row.price))
    if progress is not None:
        progress(report.rows)


def _matched(row: VendorRow, found: Match) -> RowResult:
    return RowResult(row.line, "matched", card_id=found.card.id, card_name=found.card.name,
                     variant_id=found.variant.id, printing=label(found.variant),
                     condition=found.condition, language=found.language,
                     quantity=row.quantity, matched_by=found.by, note=found.note)


def _keep(report: ImportReport, result: RowResult, *, force: bool = False) -> int | None:
    if len(report.results) < RESULT_LIMIT or (force and len(report.results) < 2 * RESULT_LIMIT):
        report.results.append(result)
        return len(report.results) - 1
    report.results_truncated = True
    return None


def _cents(dollars: Decimal) -> int:
    return int((dollars * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


# -- writing ---------------------------------------------------------------------------------

PRODUCTS_SQL = """
INSERT INTO products (card_id, variant_id, condition, language, sku)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
ON CONFLICT DO NOTHING
"""
FIND_PRODUCTS_SQL = """
SELECT p.id, p.variant_id, p.condition, p.language
FROM products p
JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS k(v, c, l)
  ON p.variant_id = k.v AND p.condition = k.c AND p.language = k.l
"""
ADD_SQL = """
INSERT INTO inventory_items (product_id, status, location, acquisition_cost_cents,
                             acquisition_cost, acquired_on, grading_company, grade)
SELECT t.p, 'IN_STOCK', t.l, t.c, t.e, t.d, t.g, t.gr
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::numeric[], $5::date[], $6::text[],
            $7::numeric[], $8::int[]) AS t(p, l, c, e, d, g, gr, n),
     generate_series(1, t.n)
RETURNING id, product_id, location, acquisition_cost_cents
"""
ACQUIRED_SQL = """
INSERT INTO inventory_ledger (item_id, product_id, event, to_status, to_location,
                              amount_cents, actor, reason)
SELECT i, p, 'acquired', 'IN_STOCK', l, a, $5, $6
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) AS t(i, p, l, a)
"""
# Held: in stock or reserved (a reserved copy is still on the shelf); sync removes only
# copies in stock, never one promised to a buyer.
HELD_SQL = """
SELECT i.product_id, i.location, i.grading_company, i.grade, count(*) AS n,
       p.variant_id, p.condition, p.language, p.card_id
FROM inventory_items i JOIN products p ON p.id = i.product_id
WHERE i.status IN ('IN_STOCK', 'RESERVED') AND ($1::text IS NULL OR i.location = $1)
GROUP BY i.product_id, i.location, i.grading_company, i.grade, p.variant_id, p.condition,
         p.language, p.card_id
"""
REMOVE_SQL = """
WITH victims AS (
    SELECT id FROM inventory_items
    WHERE product_id = $1 AND location IS NOT DISTINCT FROM $2
      AND grading_company IS NOT DISTINCT FROM $3 AND grade IS NOT DISTINCT FROM $4
      AND status = 'IN_STOCK'
    ORDER BY id DESC LIMIT $5 FOR UPDATE)
UPDATE inventory_items i SET status = 'REMOVED', version = i.version + 1, updated_at = now()
FROM victims v WHERE i.id = v.id
RETURNING i.id, i.product_id, i.location
"""
REMOVED_SQL = """
INSERT INTO inventory_ledger (item_id, product_id, event, from_status, to_status,
                              from_location, to_location, actor, reason)
SELECT i, p, 'removed', 'IN_STOCK', 'REMOVED', l, l, $4, $5
FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS t(i, p, l)
"""


async def _products(tx: Transaction, kinds: dict[Key, _Kind]) -> dict[tuple[int, str, str],
                                                                      int]:
    wanted = {(k[0], k[1], k[2]): kind.card_id for k, kind in kinds.items()}
    out: dict[tuple[int, str, str], int] = {}
    keys = list(wanted)
    for start in range(0, len(keys), CHUNK):
        part = keys[start:start + CHUNK]
        await tx.execute(PRODUCTS_SQL, [wanted[k] for k in part], [k[0] for k in part],
                         [k[1] for k in part], [k[2] for k in part],
                         [make_sku(wanted[k], k[0], k[1], k[2]) for k in part])
        for r in await tx.fetch(FIND_PRODUCTS_SQL, [k[0] for k in part],
                                [k[1] for k in part], [k[2] for k in part]):
            out[(r["variant_id"], r["condition"], r["language"])] = r["id"]
    return out


async def _add(tx: Transaction, batch: list[tuple[int, Key, _Kind, int]], *, actor: str,
               reason: str) -> int:
    added = 0
    for start in range(0, len(batch), CHUNK):
        part = batch[start:start + CHUNK]
        rows = await tx.fetch(
            ADD_SQL, [p for p, _, _, _ in part], [k[3] for _, k, _, _ in part],
            [None if kind.cost is None else _cents(kind.cost) for _, _, kind, _ in part],
            [kind.cost for _, _, kind, _ in part], [kind.acquired_on for _, _, kind, _ in part],
            [k[4] for _, k, _, _ in part], [k[5] for _, k, _, _ in part],
            [n for _, _, _, n in part])
        await tx.execute(ACQUIRED_SQL, [r["id"] for r in rows], [r["product_id"] for r in rows],
                         [r["location"] for r in rows],
                         [r["acquisition_cost_cents"] for r in rows], actor, reason)
        added += len(rows)
    return added


async def _remove(tx: Transaction, product_id: int, key: tuple[str | None, str | None,
                                                             Decimal | None],
                  n: int, *, actor: str, reason: str) -> int:
    rows = await tx.fetch(REMOVE_SQL, product_id, *key, n)
    await tx.execute(REMOVED_SQL, [r["id"] for r in rows], [r["product_id"] for r in rows],
                     [r["location"] for r in rows], actor, reason)
    return len(rows)


async def _apply(tx: Transaction, report: ImportReport, kinds: dict[Key, _Kind], *,
                 mode: str, actor: str, prune: bool, scope_location: str | None,
                 fmt: str) -> None:
    reason = f"{fmt} import ({mode})"
    verb = "would " if report.dry_run else ""
    if mode == "add":
        wanted = {k: kind for k, kind in kinds.items() if kind.quantity > 0}
        products = await _products(tx, wanted)
        report.items_added = await _add(
            tx, [(products[k[:3]], k, kind, kind.quantity) for k, kind in wanted.items()],
            actor=actor, reason=reason)
        for kind in kinds.values():
            _act(report, kind, f"{verb}add {kind.quantity}" if kind.quantity else "nothing to add")
        return
    held: dict[tuple[int, str | None, str | None, Decimal | None], int] = {}
    about: dict[tuple[int, str | None, str | None, Decimal | None], Any] = {}
    for r in await tx.fetch(HELD_SQL, scope_location):
        hk = (r["product_id"], r["location"], r["grading_company"], r["grade"])
        held[hk] = r["n"]
        about[hk] = r
    products = await _products(tx, {k: kind for k, kind in kinds.items() if kind.target > 0})
    existing = {(r["variant_id"], r["condition"], r["language"]): r["product_id"]
                for r in about.values()}
    products.update({k: v for k, v in existing.items() if k not in products})
    adds: list[tuple[int, Key, _Kind, int]] = []
    seen: set[tuple[int, str | None, str | None, Decimal | None]] = set()
    for k, kind in kinds.items():
        product = products.get(k[:3])
        have = 0
        if product is not None:
            hk = (product, k[3], k[4], k[5])
            have = held.get(hk, 0)
            seen.add(hk)
        if kind.target > have and product is not None:
            adds.append((product, k, kind, kind.target - have))
            _act(report, kind, f"{verb}add {kind.target - have} (holds {have}, file says "
                               f"{kind.target})")
        elif kind.target < have and product is not None:
            report.items_removed += await _remove(tx, product, (k[3], k[4], k[5]),
                                                  have - kind.target, actor=actor,
                                                  reason=reason)
            _act(report, kind, f"{verb}remove {have - kind.target} (holds {have}, file says "
                               f"{kind.target})")
        else:
            report.items_unchanged += have
            _act(report, kind, f"unchanged ({have})")
    report.items_added = await _add(tx, adds, actor=actor, reason=reason)
    catalog_rows = {hk: about[hk] for hk in held if hk not in seen}
    report.missing_items = sum(held[hk] for hk in catalog_rows)
    names = {r["variant_id"]: r for r in await tx.fetch(
        "SELECT c.id, c.name, v.id AS variant_id, v.type, v.subtype, v.size, v.stamps, v.foil,"
        " v.card_id, v.tcgplayer_product_id FROM card_variants v JOIN cards c ON c.id ="
        " v.card_id WHERE v.id = ANY($1::bigint[])",
        [r["variant_id"] for r in list(catalog_rows.values())[:MISSING_LIMIT]])} \
        if catalog_rows else {}
    for hk, r in catalog_rows.items():
        if len(report.missing) < MISSING_LIMIT:
            v = names.get(r["variant_id"])
            report.missing.append(Missing(
                r["card_id"], v["name"] if v else r["card_id"],
                _variant_label(v) if v else "", r["condition"], hk[1],
                None if hk[2] is None or hk[3] is None
                else f"{hk[2]} {format(hk[3].normalize(), 'f')}",
                held[hk]))
        if prune:
            report.items_removed += await _remove(tx, hk[0], (hk[1], hk[2], hk[3]), held[hk],
                                                  actor=actor, reason=reason + ", pruned")
    report.pruned = prune


def _variant_label(v: Any) -> str:
    return label(Variant(v["variant_id"], v["card_id"], v["type"], v["subtype"], v["size"],
                         tuple(v["stamps"] or ()), v["foil"], v["tcgplayer_product_id"]))


def _act(report: ImportReport, kind: _Kind, action: str) -> None:
    for i in kind.results:
        report.results[i].action = action


LEARN_DROP_SQL = """
DELETE FROM tcgplayer_skus s USING unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])
    AS k(sku, v, c, l)
WHERE s.variant_id = k.v AND s.condition = k.c AND s.language = k.l AND s.sku_id <> k.sku
"""
LEARN_SQL = """
INSERT INTO tcgplayer_skus (sku_id, variant_id, condition, language, tcgplayer_product_id,
                            learned_from)
SELECT k.sku, k.v, k.c, k.l, k.p, $6
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::int[]) AS k(sku, v, c, l, p)
ON CONFLICT (sku_id) DO UPDATE SET variant_id = excluded.variant_id,
    condition = excluded.condition, language = excluded.language,
    tcgplayer_product_id = excluded.tcgplayer_product_id,
    learned_from = excluded.learned_from, updated_at = now()
WHERE (tcgplayer_skus.variant_id, tcgplayer_skus.condition, tcgplayer_skus.language)
      IS DISTINCT FROM (excluded.variant_id, excluded.condition, excluded.language)
"""


async def _learn(tx: Transaction, skus: dict[int, tuple[int, str, str, int | None]],
                 fmt: str) -> int:
    """Remember the SKU ids a file used, one per printing × condition × language (the
    last row wins where a file gives two)."""
    by_kind = {(v, c, lang): (sku, p) for sku, (v, c, lang, p) in skus.items()}
    items = [(sku, v, c, lang, p) for (v, c, lang), (sku, p) in by_kind.items()]
    learned = 0
    for start in range(0, len(items), CHUNK):
        part = items[start:start + CHUNK]
        cols = [list(x) for x in zip(*part, strict=True)]
        await tx.execute(LEARN_DROP_SQL, cols[0], cols[1], cols[2], cols[3])
        status = await tx.execute(LEARN_SQL, *cols, fmt)
        learned += int(status.split()[-1])
    return learned


ASKING_SQL = """
INSERT INTO prices (card_id, variant_id, condition, source, price_cents, currency)
SELECT k.card, k.v, k.c, $5, k.cents, 'USD'
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS k(card, v, c, cents)
WHERE k.cents IS DISTINCT FROM (
    SELECT p.price_cents FROM prices p
    WHERE p.variant_id = k.v AND p.condition = k.c AND p.source = $5 AND p.currency = 'USD'
    ORDER BY p.observed_at DESC, p.id DESC LIMIT 1)
ON CONFLICT DO NOTHING
"""


async def _asking(tx: Transaction, asking: dict[tuple[int, str], tuple[str, int]]) -> None:
    """A file's marketplace price is the seller's asking price: kept as a price of source
    'asking', which the TCGplayer export writes back."""
    items = list(asking.items())
    for start in range(0, len(items), CHUNK):
        part = items[start:start + CHUNK]
        await tx.execute(ASKING_SQL, [card for _, (card, _) in part], [v for (v, _), _ in part],
                         [c for (_, c), _ in part], [cents for _, (_, cents) in part],
                         ASKING_SOURCE)
