"""CSV export and import in two layouts sellers and collectors already use.

TCGplayer seller inventory (the Pricing page's export/upload; assumed from its public
help pages): columns TCGplayer Id, Product Line, Set Name, Product Name, Title, Number,
Rarity, Condition, TCG Market Price, TCG Direct Low, TCG Low Price With Shipping,
TCG Low Price, Total Quantity, Add to Quantity, TCG Marketplace Price, Photo URL. One row
per SKU; Condition holds the condition, then the printing, then the language when not
English: "Near Mint", "Lightly Played Reverse Holofoil", "Near Mint 1st Edition Holofoil
- Japanese". We export IN_STOCK ungraded items grouped by product (Total Quantity =
count, TCG Market Price = our latest price, TCGplayer Id empty: we hold TCGplayer product
ids, not its SKU ids). Import creates Add to Quantity items, or Total Quantity when that
is 0.

Collectr portfolio export (assumed from its app's CSV export): Portfolio Name, Category,
Set, Product Name, Card Number, Rarity, Variance, Grade, Card Condition, Average Cost
Paid, Quantity, Market Price, Price Override, Watchlist, Date Added, Notes. Variance is
the printing, Grade "Ungraded" or "PSA 10", Portfolio Name our location. We export IN_STOCK
items grouped by product, location, grade, cost and date. Cert numbers are in neither
layout, so they do not travel.

Printings: "Normal", "Holofoil", "Reverse Holofoil", with "1st Edition " in front for the
stamp; where a card has several such printings we add the rest in parentheses
("Holofoil (Shadowless)"), so that every variant has its own label and an export imports
back to the same products. A bare TCGplayer label matches the card's plain variant.
Money columns are dollars ("12.34"). A value that a spreadsheet would run as a formula
(=, +, -, @ first) is exported with a leading apostrophe, which import removes.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from cardmint import inputs
from cardmint.db import Row, Transaction
from cardmint.errors import ValidationError
from cardmint.inventory import fields, ledger
from cardmint.inventory.items import Filters
from cardmint.inventory.products import Variants, ensure_product

Format = Literal["tcgplayer", "collectr"]
FORMATS = ("tcgplayer", "collectr")
MAX_ROWS = 5000
MAX_QUANTITY = 1000
MAX_ITEMS = 10_000

TCGPLAYER = ("TCGplayer Id", "Product Line", "Set Name", "Product Name", "Title", "Number",
             "Rarity", "Condition", "TCG Market Price", "TCG Direct Low",
             "TCG Low Price With Shipping", "TCG Low Price", "Total Quantity",
             "Add to Quantity", "TCG Marketplace Price", "Photo URL")
COLLECTR = ("Portfolio Name", "Category", "Set", "Product Name", "Card Number", "Rarity",
            "Variance", "Grade", "Card Condition", "Average Cost Paid", "Quantity",
            "Market Price", "Price Override", "Watchlist", "Date Added", "Notes")
REQUIRED = {
    "tcgplayer": ("Set Name", "Product Name", "Number", "Condition", "Total Quantity"),
    "collectr": ("Set", "Product Name", "Card Number", "Card Condition", "Quantity"),
}
CONDITION_NAMES = {"NM": "Near Mint", "LP": "Lightly Played", "MP": "Moderately Played",
                   "HP": "Heavily Played", "DMG": "Damaged"}
LANGUAGE_NAMES = {"en": "English", "ja": "Japanese", "fr": "French", "de": "German",
                  "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ko": "Korean",
                  "zh-cn": "Chinese (S)", "zh-tw": "Chinese (T)"}
BASE_LABELS = {"normal": "Normal", "holo": "Holofoil", "reverse": "Reverse Holofoil"}
FIRST_EDITION = "1st-edition"
# The columns a card-matching error is about, in each layout's names.
COLUMN_OF = {
    "tcgplayer": {"printing": "Condition"},
    "collectr": {"printing": "Variance", "Number": "Card Number", "Set Name": "Set"},
}
FORMULA = ("=", "+", "-", "@")

EXPORT_SQL = """
SELECT p.card_id, p.variant_id, p.condition, p.language, c.name, c.local_id, c.rarity,
       s.name AS set_name, s.printed_total, v.type, v.subtype, v.size, v.stamps, v.foil,
       i.location, i.grading_company, i.grade, i.acquisition_cost_cents, i.acquired_on,
       count(*) AS quantity, price.price_cents
FROM inventory_items i
JOIN products p ON p.id = i.product_id
JOIN cards c ON c.id = p.card_id
JOIN sets s ON s.id = c.set_id
JOIN card_variants v ON v.id = p.variant_id
LEFT JOIN LATERAL (
    SELECT pr.price_cents FROM prices pr
    WHERE pr.variant_id = p.variant_id AND pr.condition = p.condition AND pr.currency = 'USD'
    ORDER BY pr.observed_at DESC, pr.id DESC LIMIT 1) price ON true
WHERE i.status = 'IN_STOCK' AND ($1::text IS NULL OR i.location = $1)
  AND ($2::text IS NULL OR c.set_id = $2)
GROUP BY p.card_id, p.variant_id, p.condition, p.language, c.name, c.local_id, c.rarity,
         s.name, s.printed_total, c.set_id, c.position, v.type, v.subtype, v.size, v.stamps,
         v.foil, i.location, i.grading_company, i.grade, i.acquisition_cost_cents,
         i.acquired_on, price.price_cents
ORDER BY c.set_id, c.position, p.variant_id, p.condition, p.language, i.location
"""
# Cards named by set (name or id) and number; name_matches decides between reprints.
CARDS_SQL = """
SELECT q.ord, c.id, c.name, fold_search(c.name) = fold_search(q.name) AS name_matches
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(set_name, number_key,
                                                                       name, ord)
JOIN sets s ON lower(s.name) = lower(q.set_name) OR s.id = q.set_name
JOIN cards c ON c.set_id = s.id AND c.number_key = q.number_key
"""
ITEMS_SQL = """
INSERT INTO inventory_items (product_id, status, location, acquisition_cost_cents,
                             acquired_on, grading_company, grade)
SELECT $1, 'IN_STOCK', $2, $3, $4, $5, $6 FROM generate_series(1, $7)
RETURNING id, product_id, location, acquisition_cost_cents
"""


# -- printings and conditions -----------------------------------------------------------------

def _words(value: str) -> str:
    return value.replace("-", " ").title()


def printing(v: Row, *, qualified: bool = True) -> str:
    stamps = list(v["stamps"] or [])
    label = BASE_LABELS.get(v["type"], _words(v["type"]))
    if FIRST_EDITION in stamps:
        label = f"1st Edition {label}"
        stamps.remove(FIRST_EDITION)
    extra = [v["subtype"], v["foil"], *stamps,
             v["size"] if v["size"] not in (None, "standard") else None]
    extra = [_words(e) for e in extra if e]
    return f"{label} ({', '.join(extra)})" if qualified and extra else label


def pick_printing(variants: Sequence[Row], label: str) -> Row:
    wanted = (label.strip() or "Normal").lower()
    found = [v for v in variants if printing(v).lower() == wanted]
    if not found:
        found = [v for v in variants if printing(v, qualified=False).lower() == wanted]
        if len(found) > 1:
            found = [v for v in found if printing(v) == printing(v, qualified=False)]
    if len(found) != 1:
        have = "; ".join(printing(v) for v in variants)
        why = "no" if not found else "more than one"
        raise ValidationError(f"{why} printing {label!r} of this card (it has: {have})",
                              field="printing")
    return found[0]


def condition_text(condition: str, language: str, label: str | None = None) -> str:
    text = CONDITION_NAMES[condition]
    if label and label != "Normal":
        text += f" {label}"
    if language != "en":
        text += f" - {LANGUAGE_NAMES.get(language, language)}"
    return text


def parse_condition(value: str, column: str) -> tuple[str, str, str]:
    """(condition, language, printing label) from "Near Mint Holofoil - Japanese"."""
    text, language = value.strip(), "en"
    head, sep, tail = text.rpartition(" - ")
    if sep:
        names = {n.lower(): c for c, n in LANGUAGE_NAMES.items()}
        language = names.get(tail.strip().lower(), tail.strip().lower())
        fields.language(language, column)
        text = head.strip()
    for code, name in CONDITION_NAMES.items():
        if text.lower() == name.lower() or text.lower().startswith(name.lower() + " "):
            return code, language, text[len(name):].strip()
        if text.upper() == code:
            return code, language, ""
    raise ValidationError(f"{value!r} is not a condition (Near Mint, Lightly Played, "
                          "Moderately Played, Heavily Played, Damaged)", field=column)


# -- export -----------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA) else text


def _dollars(cents: int | None) -> str:
    return "" if cents is None else f"{Decimal(cents) / 100:.2f}"


def _number(row: Mapping[str, Any]) -> str:
    local, total = row["local_id"], row["printed_total"]
    return f"{local}/{total}" if total and inputs.is_digits(local) else local


async def export(ex: Any, fmt: str, filters: Filters) -> str:
    rows = await ex.fetch(EXPORT_SQL, filters.location, filters.set_id, stale_ok=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if fmt == "tcgplayer":
        writer.writerow(TCGPLAYER)
        grouped: dict[tuple[Any, ...], list[Any]] = {}
        for r in rows:
            if r["grading_company"] is not None:
                continue  # TCGplayer's seller inventory lists raw cards
            key = (r["variant_id"], r["condition"], r["language"])
            grouped.setdefault(key, [r, 0])[1] += r["quantity"]
        for r, quantity in grouped.values():
            writer.writerow([_cell(v) for v in (
                "", "Pokemon", r["set_name"], r["name"], "", _number(r), r["rarity"],
                condition_text(r["condition"], r["language"], printing(r)),
                _dollars(r["price_cents"]), "", "", "", quantity, 0, "", "")])
    else:
        writer.writerow(COLLECTR)
        for r in rows:
            grade = ("Ungraded" if r["grading_company"] is None
                     else f"{r['grading_company']} {fields_grade(r['grade'])}")
            writer.writerow([_cell(v) for v in (
                r["location"], "Pokemon", r["set_name"], r["name"], _number(r),
                r["rarity"], printing(r), grade, condition_text(r["condition"], r["language"]),
                _dollars(r["acquisition_cost_cents"]), r["quantity"],
                _dollars(r["price_cents"]), "", "false",
                r["acquired_on"].isoformat() if r["acquired_on"] else "", "")])
    return out.getvalue()


def fields_grade(grade: Decimal) -> str:
    return format(grade.normalize(), "f")


# -- import -----------------------------------------------------------------------------------

@dataclass
class ImportResult:
    rows: int = 0
    imported_rows: int = 0
    skipped_rows: int = 0  # quantity 0: nothing to add
    items_created: int = 0
    item_ids: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Row:
    line: int
    set_name: str
    number_key: str
    name: str
    label: str
    condition: str
    language: str
    quantity: int
    location: str | None = None
    cost_cents: int | None = None
    acquired_on: date | None = None
    grading_company: str | None = None
    grade: Decimal | None = None


def _clean(value: str | None) -> str:
    text = (value or "").strip()
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA) else text


def _quantity(value: str, column: str) -> int:
    return inputs.whole_or_refuse(value, column, maximum=MAX_QUANTITY)


def _number_key(value: str, column: str) -> str:
    """As the catalog's number_key: "004/102" -> "4", "TG05/TG30" -> "tg05"."""
    number = re.sub(r"^0+(?=[0-9])", "", value.split("/")[0].strip()).lower()
    if not number or len(number) > 16:
        raise ValidationError("is not a card number such as 4/102", field=column)
    return number


def _date(value: str, column: str) -> date | None:
    if not value:
        return None
    if not value.isascii():  # strptime's %Y takes any Unicode digit
        raise ValidationError(f"{value[:20]!r} is not a date (YYYY-MM-DD)", field=column)
    for form in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return fields.day(datetime.strptime(value[:10], form).date(), column)
        except ValueError:
            pass
    raise ValidationError(f"{value!r} is not a date (YYYY-MM-DD)", field=column)


def _parse(fmt: str, get: Any, line: int, location: str | None) -> _Row:
    """One CSV record as a _Row, or ValidationError naming the column."""
    if fmt == "tcgplayer":
        condition, language, label = parse_condition(get("Condition"), "Condition")
        added = _quantity(get("Add to Quantity") or "0", "Add to Quantity")
        quantity = added or _quantity(get("Total Quantity"), "Total Quantity")
        return _Row(line, get("Set Name"), _number_key(get("Number"), "Number"),
                    get("Product Name"), label, condition, language, quantity,
                    location=fields.text(location, "location"))
    category = get("Category")
    if category and category.lower() not in ("pokemon", "pokémon"):
        raise ValidationError(f"{category!r}: only Pokemon cards are in the catalog",
                              field="Category")
    condition, language, _ = parse_condition(get("Card Condition") or "Near Mint",
                                             "Card Condition")
    company, grade = None, None
    graded = get("Grade")
    if graded and graded.lower() != "ungraded":
        company, _, value = graded.partition(" ")
        try:
            company, grade, _ = fields.grading(company.upper(), value.strip() or None, None)
        except ValidationError as exc:
            raise ValidationError(f"{graded!r}: {exc}", field="Grade") from None
    return _Row(line, get("Set"), _number_key(get("Card Number"), "Card Number"),
                get("Product Name"), get("Variance"), condition, language,
                _quantity(get("Quantity"), "Quantity"),
                location=fields.text(location or get("Portfolio Name") or None, "Portfolio Name"),
                cost_cents=fields.dollars(get("Average Cost Paid"), "Average Cost Paid"),
                acquired_on=_date(get("Date Added"), "Date Added"),
                grading_company=company, grade=grade)


def _read(text: str, fmt: str, result: ImportResult,
          location: str | None) -> list[_Row]:
    if "\x00" in text:  # PostgreSQL cannot store it; refuse before any row is matched
        raise ValidationError("the CSV contains NUL characters")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationError("the CSV is empty", field="header") from None
    except csv.Error as exc:
        raise ValidationError(f"line 1: {exc}", field="header") from None
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED[fmt] if c.lower() not in columns]
    if missing:
        raise ValidationError(f"the header lacks {', '.join(missing)} (is this a {fmt} "
                              "CSV?)", field="header")
    rows: list[_Row] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append({"line": start, "field": None, "message": str(exc)})
            break
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        result.rows += 1
        if result.rows > MAX_ROWS:
            raise ValidationError(f"at most {MAX_ROWS} rows per import")

        def get(column: str, record: list[str] = record) -> str:
            i = columns.get(column.lower())
            return _clean(record[i]) if i is not None and i < len(record) else ""

        try:
            if not get(REQUIRED[fmt][1]):
                raise ValidationError("is required", field=REQUIRED[fmt][1])
            rows.append(_parse(fmt, get, start, location))
        except ValidationError as exc:
            result.errors.append({"line": start, "field": exc.field, "message": str(exc)})
    return rows


async def import_csv(tx: Transaction, text: str, fmt: str, *, actor: str,
                     location: str | None = None) -> ImportResult:
    """Check every row, report the bad ones (line, column, reason), and add the items of
    the good ones in the caller's transaction."""
    if fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}", field="format")
    result = ImportResult()
    rows = _read(text, fmt, result, location)
    if sum(r.quantity for r in rows) > MAX_ITEMS:
        raise ValidationError(f"at most {MAX_ITEMS} items per import")
    cards = await _cards(tx, rows)
    variants = Variants(await tx.fetch(
        "SELECT id, card_id, type, subtype, size, stamps, foil FROM card_variants"
        " WHERE card_id = ANY($1::text[]) ORDER BY card_id, position",
        sorted({c for c in cards.values() if isinstance(c, str)})))
    good: list[tuple[_Row, str, int]] = []
    for i, row in enumerate(rows):
        try:
            card = cards.get(i)
            if not isinstance(card, str):
                raise card or ValidationError("no such card", field="Number")
            variant = pick_printing(variants.by_card[card], row.label)
        except ValidationError as exc:
            column = COLUMN_OF[fmt].get(exc.field or "", exc.field)
            result.errors.append({"line": row.line, "field": column, "message": str(exc)})
            continue
        good.append((row, card, variant["id"]))
    for row, card, variant_id in good:
        if row.quantity == 0:
            result.skipped_rows += 1
            continue
        product_id, _ = await ensure_product(tx, card_id=card, variant_id=variant_id,
                                             condition=row.condition, language=row.language)
        created = await tx.fetch(ITEMS_SQL, product_id, row.location, row.cost_cents,
                                 row.acquired_on, row.grading_company, row.grade,
                                 row.quantity)
        await ledger.record_acquired(tx, created, actor=actor,
                                     reason=f"{fmt} import, line {row.line}")
        result.item_ids += [r["id"] for r in created]
        result.imported_rows += 1
    result.items_created = len(result.item_ids)
    result.errors.sort(key=lambda e: e["line"])
    return result


async def _cards(tx: Transaction, rows: list[_Row]) -> dict[int, str | ValidationError]:
    """Row index → card id, or the reason none (or several) matched."""
    found = await tx.fetch(CARDS_SQL, [r.set_name for r in rows],
                           [r.number_key for r in rows], [r.name for r in rows])
    by_row: dict[int, list[Any]] = defaultdict(list)
    for f in found:
        by_row[f["ord"] - 1].append(f)
    out: dict[int, str | ValidationError] = {}
    for i, row in enumerate(rows):
        matches = [f for f in by_row.get(i, []) if f["name_matches"]]
        if len(matches) == 1:
            out[i] = matches[0]["id"]
        elif not by_row.get(i):
            out[i] = ValidationError(f"no card {row.number_key} in set {row.set_name!r}",
                                     field="Number")
        elif not matches:
            names = ", ".join(f["name"] for f in by_row[i])
            out[i] = ValidationError(f"card {row.number_key} of {row.set_name!r} is {names}, "
                                     f"not {row.name!r}", field="Product Name")
        else:
            out[i] = ValidationError(f"{len(matches)} cards match; name the set by id",
                                     field="Set Name")
    return out
