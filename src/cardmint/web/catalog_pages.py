"""Catalog pages: card search with the API's query language, and one card with its
printings, price history and the inventory held of it. Anyone may browse the catalog
(as the API allows); the inventory part of a card page needs a signed-in reader."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from cardmint import inputs
from cardmint.catalog import search
from cardmint.catalog.query import MAX_LENGTH
from cardmint.db import Database
from cardmint.errors import ValidationError
from cardmint.inventory import items, prices
from cardmint.inventory.products import describe
from cardmint.web.charts import Series, line_chart
from cardmint.web.render import money, render
from cardmint.web.session import current_session

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
HISTORY_POINTS = 250  # the chart's most recent observations
HELD_SHOWN = 100
SORTS = {"": "Best match, then release order", "name": "Name", "-releasedate": "Newest set",
         "releasedate": "Oldest set", "number": "Number in set", "-hp": "HP, highest"}
EXAMPLES = ("charizard", "set:base1 rarity:\"Rare Holo\"", "number:4/102",
            "type:fire hp:[100 TO *]", "pikachu -set:base1", "(mew OR mewtwo) set:base*")
POSITION = re.compile(r"at character (\d+)")


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _int(value: str | None, default: int) -> int | None:
    """A page number from the query string; None when it is not one (shown as an error)."""
    if value is None or value == "":
        return default
    return inputs.whole(value, minimum=1, maximum=search.MAX_PAGE)


@router.get("/catalog")
async def catalog(request: Request, q: str = "", page: str | None = None,
                  sort: str = "", chosen_set: str = Query("", alias="set")) -> HTMLResponse:
    await current_session(request)
    q = q.strip()
    sets = await _set_choices(_db(request))
    set_id = chosen_set if chosen_set in {s_id for s_id, _ in sets} else ""
    full_q = f"{q} set:{set_id}".strip() if set_id else q
    error: dict[str, Any] | None = None
    result = None
    number = _int(page, 1)
    if len(q) > MAX_LENGTH:
        error = {"field": "q", "message": f"the query is longer than {MAX_LENGTH} characters"}
    elif number is None:
        error = {"field": "page",
                 "message": f"page must be a whole number from 1 to {search.MAX_PAGE}"}
    elif sort not in SORTS:
        error = {"field": "sort", "message": f"unknown sort {sort[:40]!r}"}
    else:
        try:
            result = await search.search_cards(_db(request), full_q or None,
                                               order_by=sort or None,
                                               page=number, page_size=PAGE_SIZE)
        except ValidationError as exc:
            error = {"field": exc.field or "q", "message": str(exc)}
    if error and error["field"] == "q" and (found := POSITION.search(error["message"])):
        error["position"] = int(found.group(1))  # 1-based: where the caret goes
    pages = max(1, -(-result.total_count // PAGE_SIZE)) if result else 1
    return render(request, "catalog.html", status_code=400 if error else 200, q=q,
                  sort=sort, sorts=SORTS, result=result, pages=pages, error=error,
                  examples=EXAMPLES, sets=sets, set_id=set_id)


async def _set_choices(db: Database) -> list[tuple[str, str]]:
    """(id, "Base Set (1999)") for the set picker, newest first."""
    page = await search.list_sets(db)
    rows = sorted(page.rows, key=lambda r: (str(r["release_date"] or ""), r["id"]),
                  reverse=True)
    return [(r["id"], f"{r['name']} ({str(r['release_date'] or '')[:4] or r['id']})")
            for r in rows]


@router.get("/cards/{card_id}")
async def card_page(request: Request, card_id: str) -> HTMLResponse:
    session = await current_session(request)
    db = _db(request)
    if len(card_id) > 64:
        return _no_card(request, card_id)
    # One round: the card, its price history, latest prices and (signed in) what is held.
    reads: list[Any] = [
        search.get_card(db, card_id),
        prices.history(db, card_id, variant_id=None, condition=None, source=None, page=1,
                       page_size=HISTORY_POINTS),
        prices.latest_by_product(db, card_id),
    ]
    if session is not None:
        reads.append(items.listing(db, items.Filters(card_id=card_id), page=1,
                                   page_size=HELD_SHOWN))
    card, (history, _), latest, *held = await asyncio.gather(*reads)
    if card is None:
        return _no_card(request, card_id)
    names = {v["id"]: describe(v) for v in card["variants"]}
    by_line: dict[tuple[int, str], list[tuple[Any, float]]] = {}
    for row in history:
        if row["currency"] == "USD":
            key = (row["variant_id"], row["condition"])
            by_line.setdefault(key, []).append((row["observed_at"], row["price_cents"] / 100))
    series = [Series(f"{names.get(v, v)} · {c}", pts) for (v, c), pts in sorted(by_line.items())]
    chart = Markup("").join(
        line_chart(group, title=f"Price history of {card['name']} (USD)" + suffix,
                   y_label=lambda v: money(v))
        for group, suffix in by_magnitude(series))
    held_rows, held_total = held[0] if held else ([], 0)
    return render(request, "card.html", card=card, variant_names=names, chart=chart,
                  latest=latest, held=held_rows, held_total=held_total)


SCALE_RATIO = 8.0  # lines further apart than this get a chart each, else the low ones are flat


def _top(one: Series) -> float:
    return max((p[1] for p in one.points if p[1] is not None), default=0.0)


def by_magnitude(series: list[Series]) -> list[tuple[list[Series], str]]:
    """The series in groups whose highest prices lie within SCALE_RATIO of each other,
    dearest first, each with a title suffix: a $9,000 line beside a $300 one would draw
    the cheap one flat along the axis."""
    if not series:
        return [([], "")]
    groups: list[list[Series]] = []
    for one in sorted(series, key=_top, reverse=True):
        if groups and _top(groups[-1][0]) <= _top(one) * SCALE_RATIO:
            groups[-1].append(one)
        else:
            groups.append([one])
    if len(groups) == 1:
        return [(groups[0], "")]
    return [(g, f", {i + 1} of {len(groups)}: up to {money(_top(g[0]))}")
            for i, g in enumerate(groups)]


def _no_card(request: Request, card_id: str) -> HTMLResponse:
    return render(request, "message.html", status_code=404, heading="No such card",
                  message=f"There is no card with the id {card_id[:64]!r} in the catalog.",
                  back="/catalog")
