"""Catalog reads: sets, one card with its variants, and card search with the query language.

Every read is `stale_ok`: the catalog changes only on a load, so a replica serves it.
Rows come back as plain dicts with snake_case keys; the API renders them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from cardmint.catalog import query
from cardmint.catalog.cache import VERSION_COLUMN
from cardmint.db import Database
from cardmint.errors import ValidationError

MAX_PAGE_SIZE = 250
MAX_PAGE = 10_000  # deeper pages are a crawl: narrow the query instead
MAX_ORDER_KEYS = 4

SET_COLUMNS = """s.id, s.name, s.series_id, s.series_name, s.release_date, s.printed_total,
    s.card_count, s.abbreviation, s.tcg_online_code"""
CARD_COLUMNS = """c.id, c.name, c.local_id AS number, c.set_id, s.name AS set_name,
    s.series_id, s.release_date, s.printed_total, c.category, c.rarity, c.hp, c.types,
    c.stage, c.illustrator, c.retreat, c.regulation_mark, c.dex_ids, c.legal_standard,
    c.legal_expanded"""
DETAIL_COLUMNS = """c.evolve_from, c.trainer_type, c.energy_type, c.attacks, c.abilities,
    c.weaknesses, c.resistances"""

# orderBy keys (pokemontcg.io's names too) -> SQL; NULLs always sort last.
ORDER_KEYS = {
    "name": "c.search_name",
    "number": "c.position",
    "set": "s.release_date, c.set_id",
    "releasedate": "s.release_date",
    "set.releasedate": "s.release_date",
    "hp": "c.hp",
    "rarity": "c.rarity",
    "retreat": "c.retreat",
    "category": "c.category",
    "supertype": "c.category",
    "illustrator": "c.illustrator",
    "artist": "c.illustrator",
    "id": "c.id",
}
DEFAULT_ORDER = "s.release_date, c.set_id, c.position"
TIEBREAK = "c.id"


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total_count: int
    page: int
    page_size: int
    catalog_version: int | None = None  # what the rows were read at (None: no row read)
    hints: list[str] = field(default_factory=list)  # "did you mean" for an empty result


def _check_page(page: int, page_size: int) -> None:
    if not 1 <= page <= MAX_PAGE:
        raise ValidationError(f"page must be between 1 and {MAX_PAGE}", field="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError(f"pageSize must be between 1 and {MAX_PAGE_SIZE}",
                              field="pageSize")


def order_clause(order_by: str | None, relevance: str | None) -> str:
    """ORDER BY text for a user's orderBy ("-hp,name"), from whitelisted keys only.
    Without orderBy: relevance first when the query has fuzzy words, then release order."""
    parts: list[str] = []
    keys = [k.strip() for k in (order_by or "").split(",") if k.strip()]
    if len(keys) > MAX_ORDER_KEYS:
        raise ValidationError(f"orderBy takes at most {MAX_ORDER_KEYS} keys", field="orderBy")
    for key in keys:
        descending = key.startswith("-")
        name = key.lstrip("-").lower()
        if name == "relevance":
            if relevance is None:
                continue  # no fuzzy words: every card is equally relevant
            parts.append(f"({relevance}) {'ASC' if descending else 'DESC'}")
            continue
        if name not in ORDER_KEYS:
            raise ValidationError(
                f"unknown orderBy key {key.lstrip('-')!r}; expected one of: "
                f"{', '.join(sorted({*ORDER_KEYS, 'relevance'}))} (prefix '-' for descending)",
                field="orderBy")
        direction = "DESC" if descending else "ASC"
        parts.extend(f"{col} {direction} NULLS LAST" for col in ORDER_KEYS[name].split(", "))
    if not keys and relevance is not None:
        parts.append(f"({relevance}) DESC")
    parts.extend([DEFAULT_ORDER, TIEBREAK])
    return ", ".join(parts)


async def search_cards(db: Database, q: str | None, *, order_by: str | None = None,
                       page: int = 1, page_size: int = 50, stale_ok: bool = True) -> Page:
    """Cards matching a query (see `cardmint.catalog.query`), one page of them, and how many
    match in all. Raises ValidationError (field q, orderBy, page or pageSize)."""
    _check_page(page, page_size)
    compiled = query.to_sql(q)
    order = order_clause(order_by, compiled.relevance)
    n = len(compiled.params)
    # One round trip. The inner query sorts and counts narrow rows (the window count runs
    # before LIMIT, over every match); only the page's rows are then read in full. Its
    # order survives row_number() over the already sorted subquery.
    sql = (f"SELECT {CARD_COLUMNS}, page.total_count, {VERSION_COLUMN} FROM ("
           "SELECT hit.id, hit.total_count, row_number() OVER () AS ord FROM ("
           "SELECT c.id, count(*) OVER () AS total_count "
           f"FROM cards c JOIN sets s ON s.id = c.set_id WHERE {compiled.where} "
           f"ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2}) AS hit) AS page "
           "JOIN cards c ON c.id = page.id JOIN sets s ON s.id = c.set_id ORDER BY page.ord")
    rows = await db.fetch(sql, *compiled.params, page_size, (page - 1) * page_size,
                          stale_ok=stale_ok)
    if rows:
        total = rows[0]["total_count"]
    elif page == 1:
        total = 0
    else:  # past the last page: the window had no row to count on
        total = await db.fetchval(
            f"SELECT count(*) FROM cards c JOIN sets s ON s.id = c.set_id "
            f"WHERE {compiled.where}", *compiled.params, stale_ok=stale_ok)
    data = []
    for row in rows:
        item = dict(row)
        del item["total_count"], item["catalog_version"]
        data.append(item)
    hints = await did_you_mean(db, q) if total == 0 else []
    return Page(data, total, page, page_size,
                catalog_version=rows[0]["catalog_version"] if rows else None,
                hints=hints)


# field -> SQL listing what its values may be: (value to suggest, label)
SUGGEST_SQL = {
    "set": "SELECT id, name FROM sets UNION ALL SELECT id, name FROM sets",
    "rarity": "SELECT DISTINCT rarity, rarity FROM cards WHERE rarity IS NOT NULL",
    "type": "SELECT DISTINCT t, t FROM cards, unnest(types) AS t",
    "category": "SELECT DISTINCT category, category FROM cards",
    "stage": "SELECT DISTINCT stage, stage FROM cards WHERE stage IS NOT NULL",
    "series": "SELECT DISTINCT series_id, series_name FROM sets",
}
MAX_HINTS = 3


async def did_you_mean(db: Database, q: str | None) -> list[str]:
    """For each field term that alone matches no card, the closest values the field
    does hold: 'set:"Base Sett" matches nothing; did you mean set:base1 (Base Set)?'."""
    hints: list[str] = []
    for term in query.terms(query.parse(q))[:MAX_HINTS]:
        if term.field not in SUGGEST_SQL or "*" in term.value:
            continue
        alone = query.compile_query(term)
        if await db.fetchval(f"SELECT EXISTS (SELECT 1 FROM cards c WHERE {alone.where})",
                             *alone.params, stale_ok=True):
            continue
        rows = await db.fetch(SUGGEST_SQL[term.field], stale_ok=True)
        # a set is matched on its id and its name alike; each suggests its id
        labels: dict[str, tuple[str, str]] = {}
        for i, (value, label) in enumerate(rows):
            key = (label if term.field == "set" and i >= len(rows) // 2 else value)
            labels[query.fold(str(key)).lower()] = (str(value), str(label))
        close = difflib.get_close_matches(query.fold(term.value).lower(), labels, n=3,
                                          cutoff=0.5)
        shown = f'{term.field}:{_quoted(term.value)}'
        picks: list[str] = []
        for key in close:
            value, label = labels[key]
            text = f"{term.field}:{_quoted(value)}" + (f" ({label})" if label != value else "")
            if text not in picks:
                picks.append(text)
        hints.append(f"{shown} matches nothing; did you mean {' or '.join(picks)}?" if picks
                     else f"{shown} matches nothing.")
    return hints


def _quoted(value: str) -> str:
    return f'"{value}"' if " " in value else value


async def list_sets(db: Database, *, page: int = 1, page_size: int = MAX_PAGE_SIZE,
                    stale_ok: bool = True) -> Page:
    """Sets in release order."""
    _check_page(page, page_size)
    rows = await db.fetch(
        f"SELECT {SET_COLUMNS}, count(*) OVER () AS total_count, {VERSION_COLUMN} "
        "FROM sets s "
        "ORDER BY s.release_date NULLS LAST, s.id LIMIT $1 OFFSET $2",
        page_size, (page - 1) * page_size, stale_ok=stale_ok)
    total = rows[0]["total_count"] if rows else await db.fetchval(
        "SELECT count(*) FROM sets", stale_ok=stale_ok)
    data = []
    for row in rows:
        item = dict(row)
        del item["total_count"], item["catalog_version"]
        data.append(item)
    return Page(data, total, page, page_size,
                rows[0]["catalog_version"] if rows else None)


async def get_set(db: Database, set_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {SET_COLUMNS} FROM sets s WHERE s.id = $1", set_id,
                            stale_ok=True)
    return dict(row) if row is not None else None


async def get_card(db: Database, card_id: str, *,
                   stale_ok: bool = True) -> dict[str, Any] | None:
    """One card with its game text and its variants (in catalog order), and the catalog
    version it was read at (`catalog_version`)."""
    row = await db.fetchrow(
        f"SELECT {CARD_COLUMNS}, {DETAIL_COLUMNS}, {VERSION_COLUMN}, "
        "coalesce((SELECT jsonb_agg(jsonb_build_object("
        "'id', v.id, 'type', v.type, 'subtype', v.subtype, 'size', v.size, "
        "'stamps', v.stamps, 'foil', v.foil, 'tcgplayer_product_id', v.tcgplayer_product_id, "
        "'cardmarket_id', v.cardmarket_id) ORDER BY v.position) "
        "FROM card_variants v WHERE v.card_id = c.id), '[]') AS variants "
        "FROM cards c JOIN sets s ON s.id = c.set_id WHERE c.id = $1",
        card_id, stale_ok=stale_ok)
    return dict(row) if row is not None else None
