"""The four file layouts, told apart by their header, each read into `VendorRow`s.

- `tcgplayer`: the seller Pricing export/upload, 16 columns (18 for a store account, with
  My Store Reserve Quantity and My Store Price). `TCGplayer Id` is the SKU; Condition is
  condition + printing (+ ' - Japanese'); Total Quantity is the live count, Add to
  Quantity the change an upload makes.
- `tcgplayer-app`: the TCGplayer app's collection export (Quantity, Name, Simple Name,
  Set, Card Number, Set Code, [External ID,] Printing, Condition, Language, Rarity,
  Product ID, SKU[, Price][, Price Each]); shorter variants exist.
- `collectr`: Portfolio Name ... Market Price (As of YYYY-MM-DD) ... Notes; costs with
  4 decimals, graded rows, watchlist rows.
- `dragonshield`: a literal `"sep=,"` line, then Folder Name ... MARKET.

A row that cannot be read raises ValidationError naming its column; a row that is read
but is not stock we can hold (watchlist, Japanese, sealed, another game) carries `skip`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TextIO

from cardmint import inputs
from cardmint.errors import ValidationError
from cardmint.inventory import fields
from cardmint.inventory.interchange import vocab

MAX_QUANTITY = 100_000
MAX_ROW_TEXT = 500
MAX_CENTS = fields.MAX_CENTS

TCGPLAYER = ("TCGplayer Id", "Product Line", "Set Name", "Product Name", "Title", "Number",
             "Rarity", "Condition", "TCG Market Price", "TCG Direct Low",
             "TCG Low Price With Shipping", "TCG Low Price", "Total Quantity",
             "Add to Quantity", "TCG Marketplace Price", "Photo URL")
TCGPLAYER_STORE = (*TCGPLAYER[:15], "My Store Reserve Quantity", "My Store Price",
                   "Photo URL")
TCGPLAYER_APP = ("Quantity", "Name", "Simple Name", "Set", "Card Number", "Set Code",
                 "External ID", "Printing", "Condition", "Language", "Rarity", "Product ID",
                 "SKU", "Price", "Price Each")
TCGPLAYER_APP_SHORT = ("Quantity", "Name", "Simple Name", "Set", "Card Number", "Set Code",
                       "Printing", "Condition", "Language", "Rarity", "Product ID", "SKU")
COLLECTR = ("Portfolio Name", "Category", "Set", "Product Name", "Card Number", "Rarity",
            "Variance", "Grade", "Card Condition", "Average Cost Paid", "Quantity",
            "Market Price (As of {date})", "Price Override", "Watchlist", "Date Added",
            "Notes")
DRAGON_SHIELD = ("Folder Name", "Quantity", "Trade Quantity", "Card Name", "Set Code",
                 "Set Name", "Card Number", "Condition", "Printing", "Language",
                 "Price Bought", "Date Bought", "LOW", "MID", "MARKET")
SEP_LINE = '"sep=,"'

# The columns a file must have to be read as the layout (lower case).
REQUIRED = {
    "tcgplayer": ("tcgplayer id", "set name", "product name", "condition"),
    "tcgplayer-app": ("quantity", "name", "set", "condition"),
    "collectr": ("set", "product name", "quantity"),
    "dragonshield": ("quantity", "card name", "set name"),
}
FORMATS = tuple(REQUIRED)
HEADERS = {"tcgplayer": TCGPLAYER, "tcgplayer-app": TCGPLAYER_APP, "collectr": COLLECTR,
           "dragonshield": DRAGON_SHIELD}
TITLES = {"tcgplayer": "TCGplayer seller pricing export",
          "tcgplayer-app": "TCGplayer app collection export",
          "collectr": "Collectr portfolio export", "dragonshield": "Dragon Shield card manager"}
FORMULA = ("=", "+", "-", "@")
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


@dataclass
class VendorRow:
    """One file row in the catalog's terms, whatever the layout."""

    line: int
    text: str  # the row as read, for reports and the review queue
    set_name: str = ""
    set_code: str = ""
    name: str = ""
    number: str = ""
    printing: vocab.Printing = field(default_factory=vocab.Printing)
    printing_text: str = ""
    condition: str = "NM"
    language: str = "en"
    quantity: int = 0  # what `add` adds
    target: int = 0  # what `sync` makes the count
    sku: int | None = None  # TCGplayer SKU id
    product_id: int | None = None  # TCGplayer product id
    cost: Decimal | None = None  # exact dollars, up to 4 decimals
    acquired_on: date | None = None
    grading_company: str | None = None
    grade: Decimal | None = None
    location: str | None = None
    price: Decimal | None = None  # the vendor's asking / marketplace price
    skip: str | None = None  # read, but not stock we can hold: why


def sniff(header: Iterable[str]) -> str | None:
    cols = {c.strip().lower() for c in header}
    if {"tcgplayer id", "product line"} <= cols:
        return "tcgplayer"
    if "simple name" in cols or ({"product id", "sku", "name"} <= cols) \
            or ({"quantity", "name", "set", "printing"} <= cols):
        return "tcgplayer-app"
    if "portfolio name" in cols or {"variance", "product name"} <= cols:
        return "collectr"
    if "folder name" in cols or {"card name", "trade quantity"} <= cols:
        return "dragonshield"
    return None


def _clean(value: str) -> str:
    text = value.strip()
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA) else text


class Reader:
    """Rows of one file, streamed: `header()` first, then iterate."""

    def __init__(self, stream: TextIO, fmt: str | None = None,
                 location: str | None = None) -> None:
        self.stream, self.location = stream, location
        first = stream.readline()
        self.line = 1
        delimiter = ","
        if "\x00" in first:
            raise ValidationError("the CSV contains NUL characters", field="header")
        found = re.fullmatch(r'"?sep=(.)"?', first.strip())
        if found:  # Dragon Shield (and Excel) name the delimiter on a line of its own
            delimiter = found.group(1)
            first = stream.readline()
            self.line = 2
        elif "," not in first and (";" in first or "\t" in first):  # a European spreadsheet
            delimiter = ";" if ";" in first else "\t"
        self.reader = csv.reader(_chain(first, stream), delimiter=delimiter)
        try:
            header = next(self.reader)
        except StopIteration:
            raise ValidationError("the file is empty", field="header") from None
        except csv.Error as exc:
            raise ValidationError(f"line {self.line}: {exc}", field="header") from None
        self.header = [h.strip().lstrip("\ufeff") for h in header]
        self.columns = {h.lower(): i for i, h in enumerate(self.header)}
        sniffed = sniff(self.header)
        if fmt is not None and fmt not in REQUIRED:
            raise ValidationError(f"format must be one of {', '.join(FORMATS)}",
                                  field="format")
        chosen = fmt or sniffed
        if chosen is None:
            raise ValidationError(
                "the header is not one of the known layouts (" + "; ".join(
                    f"{TITLES[f]}: {', '.join(HEADERS[f][:4])}, ..." for f in FORMATS)
                + ")", field="header")
        missing = [c for c in REQUIRED[chosen] if c not in self.columns]
        if missing:
            raise ValidationError(f"the header lacks {', '.join(missing)} (is this a "
                                  f"{TITLES[chosen]}?)", field="header")
        self.format = chosen
        self.market_column = next((h for h in self.header
                                   if h.lower().startswith("market price")), None)
        self.parse: Callable[[Callable[[str], str], VendorRow], None] = PARSERS[chosen]

    def __iter__(self) -> Iterator[VendorRow | tuple[int, ValidationError]]:
        line = self.line
        while True:
            start = line + 1
            try:
                record = next(self.reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, ValidationError(str(exc), field=None)
                return
            line = self.line + self.reader.line_num - 1
            if not any(cell.strip() for cell in record):
                continue
            text = ",".join(record)[:MAX_ROW_TEXT]
            row = VendorRow(line=start, text=text, location=self.location)

            def get(column: str, record: list[str] = record) -> str:
                i = self.columns.get(column.lower())
                return _clean(record[i]) if i is not None and i < len(record) else ""
            try:
                if "\x00" in text:
                    raise ValidationError("contains NUL characters", field=None)
                self.parse(get, row)
                if row.location is not None:
                    row.location = fields.text(row.location, "location")
            except ValidationError as exc:
                yield start, exc
                continue
            yield row


def _chain(first: str, rest: TextIO) -> Iterator[str]:
    yield first
    yield from rest


# -- shared readings -------------------------------------------------------------------------

def _quantity(text: str, column: str, *, empty: int = 0) -> int:
    if not text.strip():
        return empty
    raw = text.strip()
    if raw.endswith(".0"):  # spreadsheets write 2 as 2.0
        raw = raw[:-2]
    return inputs.whole_or_refuse(raw, column, maximum=MAX_QUANTITY)


def _money(text: str, column: str) -> Decimal | None:
    raw = text.strip()
    if re.fullmatch(r"[0-9]+,[0-9]{1,2}", raw, re.ASCII):  # '1,5': a decimal comma
        raw = raw.replace(",", ".")
    return inputs.money(raw, column, maximum=MAX_CENTS)


def _date(value: str, column: str) -> date | None:
    raw = value.strip()
    if not raw:
        return None
    if not raw.isascii():  # strptime's %Y takes any Unicode digit
        raise ValidationError(f"{raw[:20]!r} is not a date (YYYY-MM-DD)", field=column)
    if ISO_DAY.fullmatch(raw):
        try:
            return fields.day(date.fromisoformat(raw), column)
        except ValueError:
            pass
    for form in ("%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y"):
        try:
            return fields.day(datetime.strptime(raw[:10], form).date(), column)
        except ValueError:
            pass
    raise ValidationError(f"{raw[:20]!r} is not a date (YYYY-MM-DD)", field=column)


def _condition(text: str, column: str) -> str:
    code = vocab.condition_code(text) if text.strip() else "NM"
    if code is None:
        raise ValidationError(f"{text[:30]!r} is not a condition (Near Mint, Lightly "
                              "Played, Moderately Played, Heavily Played, Damaged)",
                              field=column)
    return code


def _language(text: str, column: str, row: VendorRow) -> None:
    code = vocab.language_code(text)
    if code is None:
        raise ValidationError(f"{text[:30]!r} is not a language", field=column)
    row.language = code
    if code == "ja":
        row.skip = "Japanese card: the catalog holds English cards only"


def _name(row: VendorRow, text: str, number: str) -> None:
    parsed = vocab.product_name(text)
    row.name = parsed.name
    row.number = number.strip() or parsed.number or ""
    if parsed.qualifiers:  # '(Master Ball Pattern)', '(Shadowless)': words of the printing
        row.printing_text = (row.printing_text + " " + " ".join(parsed.qualifiers)).strip()


def _product_line(row: VendorRow, line: str) -> None:
    folded = vocab.fold(line)
    if not folded or folded == "pokemon":
        return
    if folded.startswith("pokemonjap"):
        row.skip = "Japanese card (Pokemon Japan): the catalog holds English cards only"
    else:
        row.skip = f"{line[:40]!r} is not a Pokemon card: the catalog holds Pokemon only"


def _sealed(row: VendorRow) -> None:
    if row.skip is None and vocab.looks_sealed(row.name, row.number):
        row.skip = "sealed product: CardMint holds single cards only"


def _id(text: str, column: str) -> int | None:
    raw = text.strip()
    return inputs.whole_or_refuse(raw, column, maximum=2**31 - 1) if raw else None


# -- per layout ------------------------------------------------------------------------------

def _tcgplayer(get: Callable[[str], str], row: VendorRow) -> None:
    row.sku = _id(get("TCGplayer Id"), "TCGplayer Id")
    _product_line(row, get("Product Line"))
    row.set_name = get("Set Name")
    _name(row, get("Product Name"), get("Number"))
    raw = get("Condition") or "Near Mint"  # real exports have rows with none (sealed)
    condition, language, words = vocab.split_condition(raw)
    if condition is None:
        if raw.lower() in ("unopened", "opened", "sealed"):
            row.skip = "sealed product: CardMint holds single cards only"
        else:
            raise ValidationError(f"{raw[:40]!r} is not a condition and printing such as "
                                  "'Near Mint Holofoil'", field="Condition")
    else:
        row.condition = condition
    if language is None:
        raise ValidationError(f"{raw[:40]!r}: unknown language", field="Condition")
    row.language = language
    if language == "ja" and row.skip is None:
        row.skip = "Japanese card: the catalog holds English cards only"
    # some exports carry the printing in a column of its own (and the product id)
    row.printing_text = " ".join(p for p in (get("Printing"), words, row.printing_text) if p)
    row.product_id = _id(get("Product ID"), "Product ID")
    total = _quantity(get("Total Quantity"), "Total Quantity")
    added = _quantity(get("Add to Quantity"), "Add to Quantity")
    row.quantity = added or total
    row.target = total + added
    row.price = _money(get("TCG Marketplace Price"), "TCG Marketplace Price")
    _sealed(row)


def _tcgplayer_app(get: Callable[[str], str], row: VendorRow) -> None:
    row.quantity = row.target = _quantity(get("Quantity"), "Quantity")
    row.set_name, row.set_code = get("Set"), get("Set Code")
    simple = get("Simple Name")
    _name(row, get("Name") or simple, get("Card Number"))
    if simple:
        row.name = vocab.product_name(simple).name
    condition, language, words = vocab.split_condition(get("Condition") or "Near Mint")
    if condition is None:
        raise ValidationError(f"{get('Condition')[:40]!r} is not a condition",
                              field="Condition")
    row.condition = condition
    row.printing_text = " ".join(p for p in (get("Printing"), words, row.printing_text) if p)
    if get("Language"):
        _language(get("Language"), "Language", row)
    elif language == "ja":
        _language("ja", "Condition", row)
    row.product_id = _id(get("Product ID"), "Product ID")
    row.sku = _id(get("SKU"), "SKU")
    _sealed(row)


def _collectr(get: Callable[[str], str], row: VendorRow) -> None:
    _product_line(row, get("Category"))
    row.set_name = get("Set")
    _name(row, get("Product Name"), get("Card Number"))
    row.printing_text = (get("Variance") + " " + row.printing_text).strip()
    graded = vocab.grade(get("Grade"), "Grade")
    row.grading_company, row.grade = graded.company, graded.grade
    row.condition = _condition(get("Card Condition"), "Card Condition")
    row.cost = _money(get("Average Cost Paid"), "Average Cost Paid")
    row.quantity = row.target = _quantity(get("Quantity"), "Quantity", empty=1)
    row.acquired_on = _date(get("Date Added"), "Date Added")
    if row.location is None:
        row.location = get("Portfolio Name") or None
    if get("Watchlist").lower() in ("true", "yes", "1"):
        row.skip = "watchlist row: wanted, not owned"
    _sealed(row)


def _dragonshield(get: Callable[[str], str], row: VendorRow) -> None:
    row.quantity = row.target = _quantity(get("Quantity"), "Quantity")
    row.set_name, row.set_code = get("Set Name"), get("Set Code")
    _name(row, get("Card Name"), get("Card Number"))
    row.condition = _condition(get("Condition"), "Condition")
    row.printing_text = (get("Printing") + " " + row.printing_text).strip()
    _language(get("Language"), "Language", row)
    row.cost = _money(get("Price Bought"), "Price Bought")
    row.acquired_on = _date(get("Date Bought"), "Date Bought")
    if row.location is None:
        row.location = get("Folder Name") or None
    _sealed(row)


PARSERS: dict[str, Callable[[Callable[[str], str], VendorRow], None]] = {
    "tcgplayer": _tcgplayer, "tcgplayer-app": _tcgplayer_app, "collectr": _collectr,
    "dragonshield": _dragonshield,
}


def finish(row: VendorRow) -> VendorRow:
    """The printing words read (after every column had its say)."""
    row.printing = vocab.printing(row.printing_text)
    return row
