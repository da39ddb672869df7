"""Issue 19's levers, for correctness (their speed is in bench/): the catalog cache is never
older than the last completed load, across server processes; `serve --workers` starts
and stops its children by PID; inventory keyset paging; totals under concurrent changes."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path

import httpx

from cardmint.catalog.load import BUMP_VERSION_SQL, load_catalog
from cardmint.config import secret
from cardmint.db import Database, Transaction
from cardmint.db.connect import connection
from cardmint.inventory import items
from cardmint.inventory.products import VariantRef
from cardmint.ops.loadtest.apiserver import serving
from support import TestCluster, poll

CARD = "base1-4"


async def _names(urls: list[str], http: httpx.AsyncClient) -> list[tuple[str, int]]:
    """Each server's name for CARD, and how many cards a search by that name finds; and
    the name identification gives CARD when OCR read its number (cached like the rest)."""
    out = []
    for url in urls:
        card = (await http.get(f"{url}/v1/cards/{CARD}")).raise_for_status().json()
        name = card["data"]["name"]
        found = (await http.get(f"{url}/v1/cards", params={"q": f'name:"{name}"'}))
        out.append((name, found.raise_for_status().json()["totalCount"]))
        read = await http.post(f"{url}/v1/identify", json={"number": "4/102",
                                                            "setCode": "base1"})
        named = {c["cardId"]: c["name"] for c in read.raise_for_status().json()["data"]}
        assert named[CARD] == name, "identification and lookup disagree"
    return out


async def test_a_load_makes_the_next_answer_fresh_in_every_process(
        pg: TestCluster, catalog: Database) -> None:
    s = pg.settings()
    owner = secret(s.migration_url) or ""
    args = ("--no-monitor", "--no-worker", "--no-sync-guard")
    async with serving(s, extra_args=args) as (one, _), \
            serving(s, extra_args=args) as (two, _), \
            httpx.AsyncClient(trust_env=False, timeout=10) as http:
        original = await _names([one, two], http)
        assert original[0] == original[1] and original[0][1] >= 1
        tampered = f"Tampered {uuid.uuid4().hex[:6]}"
        async with connection(owner, s) as conn:
            # a change nobody announced: the cached answers stay (the cache is in use)
            await conn.execute("UPDATE cards SET name = $1 WHERE id = $2", tampered, CARD)
            assert await _names([one, two], http) == original
            # what a load does when it changed something: the next answer is fresh
            await conn.execute(BUMP_VERSION_SQL)
        assert await _names([one, two], http) == [(tampered, 1)] * 2
        assert await _names([one, two], http) == [(tampered, 1)] * 2  # now cached
        try:
            async with connection(owner, s) as conn:
                report = await load_catalog(conn)  # puts the vendored name back
            assert report.changes["cards"].updated >= 1
            # no wait, no poll: the answer right after the load returned is the new one
            assert await _names([one, two], http) == original
        finally:
            async with connection(owner, s) as conn:
                await conn.execute("UPDATE cards SET name = $1 WHERE id = $2 AND name = $3",
                                   original[0][0], CARD, tampered)


async def test_workers_start_and_stop_by_pid(pg: TestCluster, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    async with serving(pg.settings(), log_to=log,
                       extra_args=("--workers", "2", "--no-monitor", "--no-sync-guard")
                       ) as (url, parent):
        line = re.search(r"PIDs ([\d ]+)", log.read_text())
        assert line is not None, log.read_text()
        children = [int(p) for p in line.group(1).split()]
        assert len(children) == 2 and parent not in children
        argv, parents = _proc(children)
        # the background loops (here the intake worker) run in one child only
        assert [b"--worker" in a for a in argv] == [True, False]
        assert parents == [parent, parent]
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            for _ in range(10):
                assert (await http.get(f"{url}/health")).status_code == 200
    # the parent was stopped by PID (SIGTERM); it stopped each child by PID

    def gone() -> bool:
        return not any(os.path.exists(f"/proc/{p}") for p in children)
    await poll(gone, timeout=15)


def _proc(pids: list[int]) -> tuple[list[list[bytes]], list[int]]:
    """Each process's argv and parent PID, from /proc."""
    argv = [Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in pids]
    return argv, [int(Path(f"/proc/{p}/stat").read_text().split()[3]) for p in pids]


async def _item(db: Database, variant_id: int, location: str, cost: int | None = None,
                condition: str = "NM") -> int:
    async with db.transaction() as tx:
        row = await items.add(tx, items.NewItem(VariantRef(variant_id=variant_id),
                                                condition=condition, location=location,
                                                acquisition_cost_cents=cost),
                              actor="test")
    return int(row["id"])


async def _variant(db: Database, card_id: str) -> int:
    return int(await db.fetchval("SELECT id FROM card_variants WHERE card_id = $1 "
                                 "ORDER BY position LIMIT 1", card_id))


async def test_keyset_pages_are_the_offset_pages(catalog: Database) -> None:
    db, shelf = catalog, f"keyset-{uuid.uuid4().hex[:8]}"
    variant = await _variant(db, "base1-58")
    made = [await _item(db, variant, shelf) for _ in range(7)]
    f = items.Filters(location=shelf)
    by_page = [r["id"] for p in (1, 2, 3) for r in (await items.listing(
        db, f, page=p, page_size=3))[0]]
    by_key: list[int] = []
    after = 0
    while True:
        rows, total = await items.listing(db, f, page=1, page_size=3, after=after)
        assert total == 7
        if not rows:
            break
        by_key += [r["id"] for r in rows]
        after = rows[-1]["id"]
    assert by_page == by_key == made


async def test_a_shelf_page_is_the_same_by_its_index_and_by_the_key(catalog: Database) -> None:
    """A shelf's page is read through the shelf's index (sorted) when the shelf is small,
    by the primary key when it is big (items.SHELF_SORT_MAX): the same items either way,
    and an empty shelf answers at once."""
    db, shelf = catalog, f"Plan-{uuid.uuid4().hex[:8]}"
    variant = await _variant(db, "base1-58")
    made = [await _item(db, variant, f"{shelf}-{n % 2}") for n in range(9)]
    async with db.transaction() as tx:  # one of them sold: not on the in-stock pages
        await items.transition(tx, made[4], "sell", version=None, actor="t", amount_cents=1)
    f = items.Filters(location=shelf.lower(), status="IN_STOCK")
    for page, after in ((1, None), (2, None), (3, None), (1, made[5])):
        pages = []
        for collect in (True, False):
            sql, *args = items.listing_query(f, page=page, page_size=3, after=after,
                                             collect=collect)
            pages.append(list(await db.fetchval(sql, *args)))
        assert pages[0] == pages[1], (page, after)
    rows, total = await items.listing(db, f, page=1, page_size=50)
    assert total == 8 and [r["id"] for r in rows] == [i for i in made if i != made[4]]
    assert await items.listing(db, items.Filters(location=shelf, status="SOLD"), page=2,
                               page_size=3) == ([], 1)
    assert await items.listing(db, items.Filters(location=f"{shelf}-none"), page=1,
                               page_size=3) == ([], 0)


CHECK_TOTALS = """
SELECT product_id, status, count(*) AS items, count(grading_company) AS graded,
       coalesce(sum(acquisition_cost_cents), 0) AS cost_cents,
       count(acquisition_cost_cents) AS with_cost
FROM inventory_items GROUP BY product_id, status
EXCEPT SELECT product_id, status, items, graded, cost_cents, with_cost
FROM inventory_totals WHERE items <> 0
"""
CHECK_SHELVES = """
SELECT lower(location) COLLATE "C", condition, status, count(*), count(grading_company)
FROM inventory_items GROUP BY 1, 2, 3
EXCEPT SELECT location_key, condition, status, items, graded FROM inventory_shelf_totals
WHERE items <> 0
"""
CHECK_SETS = """
SELECT set_id, condition, status, count(*), count(grading_company)
FROM inventory_items GROUP BY 1, 2, 3
EXCEPT SELECT set_id, condition, status, items, graded FROM inventory_set_totals
WHERE items <> 0
"""
# Every item's copies of its product's set and condition (migration 0012) are its product's.
CHECK_COPIES = """
SELECT i.id FROM inventory_items i JOIN products p ON p.id = i.product_id
JOIN cards c ON c.id = p.card_id WHERE (i.set_id, i.condition) <> (c.set_id, p.condition)
"""


async def test_totals_stay_exact_under_concurrent_changes(catalog: Database) -> None:
    db, tag = catalog, uuid.uuid4().hex[:8]
    variant = await _variant(db, "base1-4")

    async def worker(n: int) -> None:
        shelf = f"totals-{tag}-{n}"
        ids = [await _item(db, variant, shelf, cost=100 * n) for _ in range(4)]
        async with db.transaction() as tx:
            await items.transition(tx, ids[0], "sell", version=None, actor="t",
                                   amount_cents=500)
        async with db.transaction() as tx:
            await items.transition(tx, ids[1], "reserve", version=None, actor="t")
        async with db.transaction() as tx:  # another product: NM -> LP
            await items.update(tx, ids[2], version=1, changes={"condition": "LP"},
                               actor="t")
        async with db.transaction() as tx:  # a move between shelves, in another case
            await items.update(tx, ids[3], version=1,
                               changes={"location": shelf.upper() + "b"}, actor="t")

    async def bulk() -> None:  # one statement over many items at once, amid the others
        await db.execute("UPDATE inventory_items SET acquisition_cost_cents = 7 "
                         "WHERE location LIKE $1", f"totals-{tag}-%")

    await asyncio.gather(*(worker(n) for n in range(8)), bulk())
    await bulk()
    assert await db.fetch(CHECK_TOTALS) == []  # every (product, status) exact
    assert await db.fetch(CHECK_SHELVES) == []  # every (shelf, status) exact
    assert await db.fetch(CHECK_SETS) == []  # every (set, condition, status) exact
    assert await db.fetch(CHECK_COPIES) == []  # the condition changes followed
    source = ("inventory_items i JOIN products p ON p.id = i.product_id "
              "JOIN cards c ON c.id = p.card_id")
    for f, where in (
            (items.Filters(set_id="base1"), "c.set_id = 'base1'"),
            (items.Filters(status="IN_STOCK"), "i.status = 'IN_STOCK'"),
            (items.Filters(card_id="base1-4", condition="LP"),
             "p.card_id = 'base1-4' AND p.condition = 'LP'"),
            (items.Filters(set_id="base1", status="SOLD", graded=False),
             "c.set_id = 'base1' AND i.status = 'SOLD' AND i.grading_company IS NULL"),
            (items.Filters(graded=True), "i.grading_company IS NOT NULL"),
            (items.Filters(condition="LP"), "p.condition = 'LP'"),
            (items.Filters(condition="LP", status="IN_STOCK", graded=False),
             "p.condition = 'LP' AND i.status = 'IN_STOCK' AND i.grading_company IS NULL"),
            (items.Filters(set_id="base1", condition="NM", status="IN_STOCK"),
             "c.set_id = 'base1' AND p.condition = 'NM' AND i.status = 'IN_STOCK'"),
            (items.Filters(card_id="base1-4", location=f"totals-{tag}"),
             f"p.card_id = 'base1-4' AND i.location ILIKE 'totals-{tag}%'"),
            (items.Filters(location=f"TOTALS-{tag}-3"), f"i.location ILIKE 'totals-{tag}-3%'"),
            (items.Filters(location=f"totals-{tag}-1", status="IN_STOCK", graded=False),
             f"i.location ILIKE 'totals-{tag}-1%' AND i.status = 'IN_STOCK' "
             "AND i.grading_company IS NULL"),
            (items.Filters(location="totals_", status="IN_STOCK"),  # _ taken literally
             "lower(i.location) LIKE 'totals\\_%' AND i.status = 'IN_STOCK'"),
            (items.Filters(location=f"totals-{tag}-2", condition="LP", graded=False),
             f"i.location ILIKE 'totals-{tag}-2%' AND p.condition = 'LP' "
             "AND i.grading_company IS NULL"),
            (items.Filters(location=f"totals-{tag}", set_id="base1"),
             f"i.location ILIKE 'totals-{tag}%' AND c.set_id = 'base1'"),
            (items.Filters(), "true")):
        # the reference: every matching item counted one by one
        expected = await db.fetchval(f"SELECT count(*) FROM {source} WHERE {where}")
        assert await items.count(db, f) == expected, f
    # and read-your-writes: a change is in the next total, in the same transaction too
    before = await items.count(db, items.Filters(card_id="base1-4", status="SOLD"))
    async with db.transaction() as tx:
        new = await _item_in(tx, variant, f"totals-{tag}-x")
        await items.transition(tx, new, "sell", version=None, actor="t", amount_cents=1)
        assert await items.count(tx, items.Filters(card_id="base1-4",
                                                   status="SOLD")) == before + 1
        shelf = items.Filters(location=f"totals-{tag}-x", status="SOLD")
        assert await items.count(tx, shelf) == 1


async def _item_in(tx: Transaction, variant_id: int, location: str) -> int:
    row = await items.add(tx, items.NewItem(VariantRef(variant_id=variant_id),
                                            location=location), actor="test")
    return int(row["id"])


# The reference page: every matching item, joined the plain way, in id order.
REFERENCE_PAGE = """
SELECT i.id FROM inventory_items i JOIN products p ON p.id = i.product_id
JOIN cards c ON c.id = p.card_id WHERE {where} ORDER BY i.id LIMIT $1 OFFSET $2
"""


async def test_every_filter_pages_like_the_reference(catalog: Database) -> None:
    """Whichever way a page is found (a set's or the graded items' index walked, a card's
    or a shelf's items collected and sorted, the key walked), it holds the reference's
    items, on the first page, a later one, one past the end and by keyset."""
    db, shelf = catalog, f"shapes-{uuid.uuid4().hex[:8]}"
    variant = await _variant(db, "base1-4")
    for n in range(6):
        await _item(db, variant, f"{shelf}-{n % 2}", condition=("NM", "LP", "DMG")[n % 3])
    async with db.transaction() as tx:
        graded = await _item_in(tx, variant, f"{shelf}-1")
        await items.update(tx, graded, version=1, actor="t", changes={
            "grading_company": "PSA", "grade": 9, "cert_number": f"C{shelf}"})
    for f, where in (
            (items.Filters(set_id="base1"), "c.set_id = 'base1'"),
            (items.Filters(set_id="base1", condition="LP", status="IN_STOCK"),
             "c.set_id = 'base1' AND p.condition = 'LP' AND i.status = 'IN_STOCK'"),
            (items.Filters(set_id="base1", location=shelf),
             f"c.set_id = 'base1' AND i.location LIKE '{shelf}%'"),
            (items.Filters(graded=True), "i.grading_company IS NOT NULL"),
            (items.Filters(graded=True, set_id="base1", status="IN_STOCK"),
             "i.grading_company IS NOT NULL AND c.set_id = 'base1' AND i.status = 'IN_STOCK'"),
            (items.Filters(card_id="base1-4", condition="DMG"),
             "p.card_id = 'base1-4' AND p.condition = 'DMG'"),
            (items.Filters(condition="LP"), "p.condition = 'LP'"),
            (items.Filters(condition="DMG", graded=False), "p.condition = 'DMG' AND "
             "i.grading_company IS NULL"),
            (items.Filters(location=shelf, graded=True),
             f"i.location LIKE '{shelf}%' AND i.grading_company IS NOT NULL"),
            (items.Filters(location=f"{shelf}-0", condition="NM"),
             f"i.location = '{shelf}-0' AND p.condition = 'NM'")):
        total = await db.fetchval(f"SELECT count(*) FROM ({REFERENCE_PAGE.format(where=where)})"
                                  " AS m", None, 0)
        assert total > 0, f  # the shape has matches to page through
        for page in (1, 2, total // 2 + 2):
            want = [r["id"] for r in await db.fetch(REFERENCE_PAGE.format(where=where), 2,
                                                    (page - 1) * 2)]
            rows, got_total = await items.listing(db, f, page=page, page_size=2)
            assert ([r["id"] for r in rows], got_total) == (want, total), (f, page)
        first = await db.fetchval(f"SELECT min(i.id) FROM ({REFERENCE_PAGE.format(where=where)})"
                                  " AS i", None, 0)
        want = [r["id"] for r in await db.fetch(
            REFERENCE_PAGE.format(where=f"{where} AND i.id > {first}"), 2, 0)]
        rows, _ = await items.listing(db, f, page=1, page_size=2, after=first)
        assert [r["id"] for r in rows] == want, (f, "after")


async def test_an_items_set_and_condition_are_its_products(catalog: Database) -> None:
    """The copies on the item follow its product whoever writes it: a condition change
    moves it to another product, and a hand-written copy is put back."""
    db = catalog
    item = await _item(db, await _variant(db, "base1-4"), f"copies-{uuid.uuid4().hex[:8]}")
    async with db.transaction() as tx:
        await items.update(tx, item, version=1, changes={"condition": "HP"}, actor="t")
    await db.execute("UPDATE inventory_items SET set_id = 'base2', condition = 'NM' "
                     "WHERE id = $1", item)
    row = await db.fetchrow("SELECT set_id, condition FROM inventory_items WHERE id = $1",
                            item)
    assert (row["set_id"], row["condition"]) == ("base1", "HP")
    assert await db.fetch(CHECK_SETS) == []
