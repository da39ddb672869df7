"""Files the vendors' tools accept, from the items in stock.

- TCGplayer (seller upload): one row per SKU; `TCGplayer Id` is the SKU id where an import
  taught us one (blank otherwise: TCGplayer then matches nothing, and says so); `Add to
  Quantity` is our count (an upload adds it to the live count), `Total Quantity` blank (the
  live count is TCGplayer's to know); `TCG Marketplace Price` our asking price (the last
  `asking` price an import stated, else the latest market price). Raw cards only.
- Collectr: its 16 columns in order, `Market Price (As of <today>)`, costs with 4 decimals.
- Dragon Shield: the `"sep=,"` line, then its 15 columns. Raw cards only (it has no grade).

A value a spreadsheet would run as a formula (=, +, -, @ first) is written with a leading
apostrophe, which import removes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cardmint import inputs
from cardmint.errors import ValidationError
from cardmint.inventory.interchange import layouts, vocab
from cardmint.inventory.interchange.matching import Variant, label
from cardmint.inventory.items import Filters

EXPORT_FORMATS = ("tcgplayer", "collectr", "dragonshield")
FORMULA = ("=", "+", "-", "@")
BATCH = 2_000

EXPORT_SQL = """
SELECT p.card_id, p.variant_id, p.condition, p.language, c.name, c.local_id, c.rarity,
       c.set_id, s.name AS set_name, s.printed_total, s.abbreviation, v.type, v.subtype,
       v.size, v.stamps, v.foil, v.tcgplayer_product_id, i.location, i.grading_company,
       i.grade, {cost} i.acquired_on, count(*) AS quantity, sku.sku_id,
       (SELECT pr.price_cents FROM prices pr
        WHERE pr.variant_id = p.variant_id AND pr.condition = p.condition
          AND pr.currency = 'USD' AND pr.source <> 'asking'
        ORDER BY pr.observed_at DESC, pr.id DESC LIMIT 1) AS market_cents,
       (SELECT pr.price_cents FROM prices pr
        WHERE pr.variant_id = p.variant_id AND pr.condition = p.condition
          AND pr.currency = 'USD' AND pr.source = 'asking'
        ORDER BY pr.observed_at DESC, pr.id DESC LIMIT 1) AS asking_cents
FROM inventory_items i
JOIN products p ON p.id = i.product_id
JOIN cards c ON c.id = p.card_id
JOIN sets s ON s.id = c.set_id
JOIN card_variants v ON v.id = p.variant_id
LEFT JOIN tcgplayer_skus sku ON sku.variant_id = p.variant_id
     AND sku.condition = p.condition AND sku.language = p.language
WHERE i.status = 'IN_STOCK' AND ($1::text IS NULL OR i.location = $1)
  AND ($2::text IS NULL OR c.set_id = $2) {graded}
GROUP BY p.card_id, p.variant_id, p.condition, p.language, c.name, c.local_id, c.rarity,
         c.set_id, c.position, s.name, s.printed_total, s.abbreviation, v.type, v.subtype,
         v.size, v.stamps, v.foil, v.tcgplayer_product_id, i.location, i.grading_company,
         i.grade, {cost_group} i.acquired_on, sku.sku_id
ORDER BY c.set_id, c.position, p.variant_id, p.condition, p.language, i.location
"""


def _sql(fmt: str) -> str:
    if fmt == "collectr":
        return EXPORT_SQL.format(cost="coalesce(i.acquisition_cost, "
                                      "i.acquisition_cost_cents / 100.0) AS cost,",
                                 cost_group="i.acquisition_cost, i.acquisition_cost_cents,",
                                 graded="")
    if fmt == "dragonshield":
        return EXPORT_SQL.format(cost="coalesce(i.acquisition_cost, "
                                      "i.acquisition_cost_cents / 100.0) AS cost,",
                                 cost_group="i.acquisition_cost, i.acquisition_cost_cents,",
                                 graded="AND i.grading_company IS NULL")
    return EXPORT_SQL.format(cost="NULL::numeric AS cost,", cost_group="",
                             graded="AND i.grading_company IS NULL")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA) else text


def _dollars(cents: int | None) -> str:
    return "" if cents is None else f"{Decimal(cents) / 100:.2f}"


def _exact(cost: Decimal | None, places: int) -> str:
    return "" if cost is None else f"{Decimal(cost):.{places}f}"


def _number(r: Any) -> str:
    local, total = r["local_id"], r["printed_total"]
    return f"{local}/{total}" if total and inputs.is_digits(local) else str(local)


def _variant(r: Any) -> Variant:
    return Variant(r["variant_id"], r["card_id"], r["type"], r["subtype"], r["size"],
                   tuple(r["stamps"] or ()), r["foil"], r["tcgplayer_product_id"])


def _language(code: str) -> str:
    return vocab.LANGUAGE_NAMES.get(code, code)


def _set_name(r: Any) -> str:
    if r["set_id"] == "base1" and (r["subtype"] or "").startswith("shadowless"):
        return "Base Set (Shadowless)"  # TCGplayer's own set for these printings
    return str(r["set_name"])


def header(fmt: str, today: date | None = None) -> list[str]:
    if fmt == "collectr":
        day = (today or datetime.now(UTC).date()).isoformat()
        return [c.format(date=day) for c in layouts.COLLECTR]
    return list({"tcgplayer": layouts.TCGPLAYER, "dragonshield": layouts.DRAGON_SHIELD}[fmt])


def row(fmt: str, r: Any) -> list[str]:
    v = _variant(r)
    printing = label(v)
    condition = vocab.CONDITION_NAMES[r["condition"]]
    if fmt == "tcgplayer":
        text = condition + ("" if printing == "Normal" else f" {printing}")
        if r["language"] != "en":
            text += f" - {_language(r['language'])}"
        asking = r["asking_cents"] if r["asking_cents"] is not None else r["market_cents"]
        return [_cell(x) for x in (
            r["sku_id"] or "", "Pokemon", _set_name(r), r["name"], "", _number(r),
            r["rarity"], text, _dollars(r["market_cents"]), "", "", "", "", r["quantity"],
            _dollars(asking), "")]
    if fmt == "collectr":
        grade = ("Ungraded" if r["grading_company"] is None
                 else f"{r['grading_company']} {format(r['grade'].normalize(), 'f')}")
        return [_cell(x) for x in (
            r["location"] or "", "Pokemon", _set_name(r), r["name"], _number(r), r["rarity"],
            printing, grade, condition, _exact(r["cost"], 4), r["quantity"],
            _dollars(r["market_cents"]), "", "false",
            r["acquired_on"].isoformat() if r["acquired_on"] else "", "")]
    market = _dollars(r["market_cents"])
    return [_cell(x) for x in (
        r["location"] or "", r["quantity"], 0, r["name"], r["abbreviation"] or r["set_id"],
        _set_name(r), r["local_id"], vocab.DRAGON_SHIELD_CONDITIONS[r["condition"]],
        printing, _language(r["language"]), _exact(r["cost"], 4 if r["cost"] is not None
                                                   and Decimal(r["cost"]) * 100 % 1 else 2),
        r["acquired_on"].isoformat() if r["acquired_on"] else "", "", "", market)]


async def export(ex: Any, fmt: str, filters: Filters, *,
                 today: date | None = None) -> Iterator[str]:
    """The file, as chunks of text (one per BATCH rows)."""
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"format must be one of {', '.join(EXPORT_FORMATS)}",
                              field="format")
    rows = await ex.fetch(_sql(fmt), filters.location, filters.set_id, stale_ok=True)
    return _chunks(fmt, rows, today)


def _chunks(fmt: str, rows: list[Any], today: date | None) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if fmt == "dragonshield":
        out.write(layouts.SEP_LINE + "\r\n")
    writer.writerow(header(fmt, today))
    for i, r in enumerate(rows, 1):
        writer.writerow(row(fmt, r))
        if i % BATCH == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def template(fmt: str) -> str:
    """The header alone (and Dragon Shield's sep line): a file to fill in."""
    if fmt not in layouts.FORMATS:
        raise ValidationError(f"format must be one of {', '.join(layouts.FORMATS)}",
                              field="format")
    out = io.StringIO()
    if fmt == "dragonshield":
        out.write(layouts.SEP_LINE + "\r\n")
    cols = header(fmt) if fmt in EXPORT_FORMATS else list(layouts.HEADERS[fmt])
    csv.writer(out, lineterminator="\r\n").writerow(cols)
    return out.getvalue()
