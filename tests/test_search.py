"""Catalog search against the real cluster with the full catalog: the query language's
semantics, ordering, paging, hostile input, and the catalog routes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx
import pytest

from cardmint.api.app import create_app
from cardmint.catalog.search import get_card, get_set, list_sets, search_cards
from cardmint.db import Database
from cardmint.errors import ValidationError
from support import TestCluster, serving

CARDS, SETS, TRAINERS = 21_066, 199, 2_858


@pytest.fixture(scope="module")
async def client(pg: TestCluster, catalog: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pg.settings())
    async with serving(app) as c:
        yield c


async def everything(db: Database, q: str, order_by: str | None = None) -> list[dict]:
    page = await search_cards(db, q, order_by=order_by, page_size=250)
    assert page.total_count <= 250, "narrow the query: this helper reads one page"
    return page.rows


# (query, a predicate every row must satisfy, ids that must be among the rows)
SEMANTICS = [
    ("name:char* set:base1", lambda r: r["name"].startswith("Char") and r["set_id"] == "base1",
     {"base1-4", "base1-24", "base1-46"}),
    ("set:BS number:4", lambda r: r["id"] == "base1-4", {"base1-4"}),  # printed abbreviation
    ("number:004 set:base1", lambda r: r["id"] == "base1-4", {"base1-4"}),
    ("number:4/102", lambda r: r["number"].lstrip("0") == "4" and r["printed_total"] == 102,
     {"base1-4"}),
    ("number:TG05", lambda r: r["number"] == "TG05", {"swsh9tg-TG05"}),
    ('rarity:"rare holo" set:dp1', lambda r: r["rarity"] == "Rare Holo", {"dp1-1"}),
    ("type:fire hp:[200 TO *] set:sv*",
     lambda r: "Fire" in r["types"] and r["hp"] >= 200 and r["set_id"].startswith("sv"), set()),
    ("hp:{50 TO 70} set:base1", lambda r: r["hp"] == 60, {"base1-10"}),
    ("retreat:0 stage:stage2", lambda r: r["retreat"] == 0 and r["stage"] == "Stage2", set()),
    ("category:energy set:base1", lambda r: r["category"] == "Energy", {"base1-97"}),
    ('illustrator:"ken sugimori" set:base1', lambda r: "Ken Sugimori" in r["illustrator"],
     {"base1-1"}),
    ("illustrator:mekayu", lambda r: r["illustrator"] == "Mékayu", set()),  # accent folded
    ("series:base dex:6", lambda r: 6 in r["dex_ids"] and r["series_id"] == "base",
     {"base1-4"}),
    ("dex:[1 TO 3] set:base1", lambda r: any(1 <= d <= 3 for d in r["dex_ids"]), {"base1-15"}),
    ("(charizard OR blastoise) set:base1", lambda r: r["id"] in {"base1-2", "base1-4"},
     {"base1-2", "base1-4"}),
    ("pokemon set:base1", lambda r: "Poké" in r["name"], {"base1-76"}),  # accents folded
    ("POKÉMON breeder set:base1", lambda r: True, {"base1-76"}),
    ("charzard set:base1", lambda r: True, {"base1-4"}),  # misspelt: trigram similarity
    ('"mr. mime"', lambda r: "Mr. Mime" in r["name"], {"base2-6"}),
    ("legal:standard category:energy rarity:common",
     lambda r: r["legal_standard"] and r["category"] == "Energy", set()),
    ("set.name:jungle", lambda r: r["set_name"] == "Jungle", {"base2-1"}),
    ("id:base1-1*", lambda r: r["id"].startswith("base1-1"), {"base1-1", "base1-10"}),
]


@pytest.mark.parametrize(("q", "holds", "includes"), SEMANTICS)
async def test_query_semantics(catalog: Database, q: str, holds, includes: set[str]) -> None:
    rows = await everything(catalog, q)
    assert rows, q
    assert all(holds(r) for r in rows), [r["id"] for r in rows if not holds(r)][:5]
    assert includes <= {r["id"] for r in rows}


async def test_counts_and_negation(catalog: Database) -> None:
    assert (await search_cards(catalog, "")).total_count == CARDS
    assert (await search_cards(catalog, "category:trainer")).total_count == TRAINERS
    assert (await search_cards(catalog, "-category:trainer")).total_count == CARDS - TRAINERS
    # cards without a rarity are not common either: negation keeps them
    common = (await search_cards(catalog, "rarity:common")).total_count
    assert (await search_cards(catalog, "-rarity:common")).total_count == CARDS - common
    at_least = (await search_cards(catalog, "hp:>=100")).total_count
    assert at_least == (await search_cards(catalog, "hp:[100 TO *]")).total_count
    below = (await search_cards(catalog, "hp:<100")).total_count
    with_hp = (await search_cards(catalog, "hp:[* TO *]")).total_count
    assert at_least + below == with_hp


async def test_fuzzy_words_rank_by_relevance(catalog: Database) -> None:
    rows = (await search_cards(catalog, "charizard", page_size=5)).rows
    assert [r["name"] for r in rows[:2]] == ["Charizard", "Charizard"]
    rows = (await search_cards(catalog, "charizard", order_by="-hp", page_size=5)).rows
    strongest = await everything(catalog, "charizard hp:>=330")
    assert rows[0]["hp"] == max(r["hp"] for r in strongest)


ORDERS = [
    ("-hp", lambda r: -(r["hp"] or -1)),
    ("hp", lambda r: (r["hp"] is None, r["hp"] or 0)),
    ("name", lambda r: r["name"].lower()),
    ("-number", None),
    ("releaseDate,-retreat", lambda r: (r["release_date"], -(r["retreat"] or -1))),
]


@pytest.mark.parametrize(("order_by", "key"), ORDERS)
async def test_order_by(catalog: Database, order_by: str, key) -> None:
    rows = await everything(catalog, "set:base1 category:pokemon", order_by)
    assert len(rows) == 69
    if key is not None:
        assert rows == sorted(rows, key=key)
    else:
        positions = [int(r["number"]) for r in rows]
        assert positions == sorted(positions, reverse=True)


async def test_paging_is_stable_and_complete(catalog: Database) -> None:
    first = await search_cards(catalog, "set:base1", page=1, page_size=40)
    second = await search_cards(catalog, "set:base1", page=2, page_size=40)
    third = await search_cards(catalog, "set:base1", page=3, page_size=40)
    ids = [r["id"] for p in (first, second, third) for r in p.rows]
    assert len(ids) == len(set(ids)) == 102
    assert first.total_count == second.total_count == third.total_count == 102
    beyond = await search_cards(catalog, "set:base1", page=4, page_size=40)
    assert beyond.rows == [] and beyond.total_count == 102


BAD = [
    ({"q": "foo:bar"}, "q"),
    ({"q": "hp:[1 TO"}, "q"),
    ({"q": "x", "order_by": "colour"}, "orderBy"),
    ({"q": "x", "order_by": "a,b,c,d,e"}, "orderBy"),
    ({"q": "x", "page": 0}, "page"),
    ({"q": "x", "page_size": 251}, "pageSize"),
    ({"q": "x", "page_size": 0}, "pageSize"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD)
async def test_bad_input_names_its_field(catalog: Database, kwargs: dict, field: str) -> None:
    q = kwargs.pop("q")
    with pytest.raises(ValidationError) as caught:
        await search_cards(catalog, q, **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize("q", [
    "'; DROP TABLE cards; --x", 'name:"\'; DROP TABLE cards; --"', "rarity:\"x' OR '1'='1\"",
    "name:%", "name:_", 'name:"\\\\"', "set:%", "illustrator:\"%'\"", "ポケモン", "🔥",
    'type:"fi*\') OR TRUE --"', "number:\"1'; SELECT 1; --\"", "Ｃｈａｒｉｚａｒｄ",
])
async def test_hostile_queries_are_just_text(catalog: Database, q: str) -> None:
    page = await search_cards(catalog, q)
    assert page.total_count < CARDS  # no wildcard leaked, nothing was injected
    assert (await search_cards(catalog, "")).total_count == CARDS


async def test_sets_and_cards(catalog: Database) -> None:
    sets = await list_sets(catalog)
    assert sets.total_count == SETS and len(sets.rows) == SETS
    assert sets.rows[1]["id"] == "base1"  # release order
    assert (await get_set(catalog, "base1"))["printed_total"] == 102
    assert await get_set(catalog, "nope") is None
    card = await get_card(catalog, "base1-4")
    assert card["name"] == "Charizard" and card["attacks"][0]["name"] == "Fire Spin"
    assert [v["type"] for v in card["variants"]] and card["variants"][0]["id"] > 0
    assert await get_card(catalog, "nope-1") is None


# -- the routes ---------------------------------------------------------------------------------

async def test_search_route_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/cards", params={"q": "charizard set:base1", "pageSize": 5})
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("page", "pageSize", "count", "totalCount")} == {
        "page": 1, "pageSize": 5, "count": 1, "totalCount": 1}
    card = body["data"][0]
    assert card["id"] == "base1-4" and card["set"]["id"] == "base1"
    assert card["set"]["printedTotal"] == 102 and card["legal"] == {"standard": False,
                                                                    "expanded": False}


async def test_card_and_set_routes(client: httpx.AsyncClient) -> None:
    card = (await client.get("/v1/cards/base1-4")).json()["data"]
    assert card["name"] == "Charizard" and card["variants"][0]["type"]
    assert "tcgplayerProductId" in card["variants"][0]
    assert (await client.get("/v1/sets/base1")).json()["data"]["printedTotal"] == 102
    sets = (await client.get("/v1/sets", params={"pageSize": 10, "page": 2})).json()
    assert sets["count"] == 10 and sets["totalCount"] == SETS and sets["page"] == 2
    for path in ("/v1/sets/nope", "/v1/cards/nope-1"):
        missing = await client.get(path)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


ROUTE_ERRORS = [
    ({"q": "name:char* colour:red"}, "query.q", "at character 12"),
    ({"q": "(charizard"}, "query.q", "at character 11"),
    ({"q": "a" * 501}, "query.q", ""),
    ({"q": "x\x00"}, "query.q", "must not contain NUL"),  # refused before any route
    ({"orderBy": "-colour"}, "query.orderBy", "colour"),
    ({"pageSize": "251"}, "query.pageSize", ""),
    ({"pageSize": "many"}, "query.pageSize", ""),
    ({"page": "0"}, "query.page", ""),
    ({"page": "99999999999999999999"}, "query.page", ""),
]


@pytest.mark.parametrize(("params", "field", "says"), ROUTE_ERRORS)
async def test_search_route_errors_are_400_problems(client: httpx.AsyncClient, params: dict,
                                                     field: str, says: str) -> None:
    r = await client.get("/v1/cards", params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 400 and body["errors"][0]["field"] == field
    assert says in body["errors"][0]["message"]


async def test_long_ids_are_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/cards/" + "x" * 65)).status_code == 400
    assert (await client.get("/v1/sets/" + "x" * 65)).status_code == 400


FUZZ_WORDS = ["charizard", "pika*", '"mr. mime"', "OR", "-", "(", ")", "name:", "hp:",
              "[10 TO *]", ">=90", "set:", "base1", "sv*", "type:", "fire", "number:",
              "4/102", "rarity:", "%", "_", "'", "é", "dex:", "6", "illustrator:", "arita",
              "series:", "legal:", "standard", "retreat:", "<2", "NOT", "AND", "\\"]


async def test_random_queries_answer_or_say_why(client: httpx.AsyncClient) -> None:
    """Fixed-seed random queries through the route: a page or a 400, never a 5xx."""
    rng = random.Random(99)
    statuses = set()
    for _ in range(150):
        words = [rng.choice(FUZZ_WORDS) for _ in range(rng.randrange(1, 7))]
        q = "".join(w if rng.random() < 0.5 else w + " " for w in words)
        r = await client.get("/v1/cards", params={"q": q, "pageSize": 5,
                                                  "orderBy": rng.choice(["", "-hp", "name"])})
        assert r.status_code in (200, 400), (q, r.status_code, r.text)
        statuses.add(r.status_code)
    assert statuses == {200, 400}


async def test_search_forgives_word_order_set_names_and_says_what_it_meant(
        catalog: Database) -> None:
    """The README's own `rarity:"Rare Holo"` finds the data's "Holo Rare" too; a set by
    its name; a value that matches nothing gets the closest ones."""
    both = await search_cards(catalog, 'rarity:"Rare Holo"', page_size=1)
    holo_rare = await search_cards(catalog, 'rarity:"holo rare"', page_size=1)
    assert both.total_count == holo_rare.total_count > 700
    assert (await search_cards(catalog, 'rarity:"Rare Ultra"')).total_count == (
        await search_cards(catalog, 'rarity:"Ultra Rare"')).total_count > 0
    by_name = await search_cards(catalog, 'set:"base set"', page_size=1)
    assert by_name.total_count == 102 == (await search_cards(catalog, "set:base1")).total_count
    assert by_name.hints == []
    miss = await search_cards(catalog, 'charizard set:"Base Sett" rarity:"Holo Rrae"')
    assert miss.total_count == 0
    assert any("did you mean set:base1 (Base Set)" in h for h in miss.hints), miss.hints
    assert any('rarity:"Holo Rare"' in h for h in miss.hints), miss.hints


async def test_the_api_docs_need_no_network(client: httpx.AsyncClient) -> None:
    """Issue 17 item 9: /docs loaded Swagger UI from a CDN (a blank page offline); its
    files now come from the pinned swagger-ui-bundle package."""
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "http" not in page.text.split("<body>")[-1]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = await client.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000, asset


async def test_type_synonyms(catalog: Database) -> None:
    assert (await search_cards(catalog, "type:electric", page_size=1)).total_count == (
        await search_cards(catalog, "type:lightning", page_size=1)).total_count > 0
