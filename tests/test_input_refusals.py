"""What the outside review (issue 15) sent the API, and what it must answer now: a 4xx
naming the field in our words, never a 500 and never PostgreSQL's text; the price feed
refusing a row, not the batch; bad values refused, not stored."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cardmint.db import Database
from cardmint.inventory.interchange import layouts
from cardmint.ops import freeze
from inventory_helpers import Api, opened, problem_fields
from support import TestCluster

SERVER_WORDS = ("invalid byte sequence", "0x00", "Failing row", "violates", "permission denied",
                "DETAIL", "relation \"")


@pytest.fixture
async def api(pg: TestCluster, catalog: Database) -> AsyncIterator[Api]:
    async with opened(pg) as a:
        yield a


def ours(r: httpx.Response) -> None:
    """A 4xx problem, in our words."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"
    assert not [w for w in SERVER_WORDS if w in r.text], r.text[:300]


async def test_nul_and_other_controls_in_a_url_are_a_400_naming_the_parameter(api: Api) -> None:
    for path, params, field in (("/v1/cards/base1-4%00", {}, "path"),
                                ("/v1/sets/base1%00", {}, "path"),
                                ("/v1/cards/base1-4/prices", {"source": "a\x00b"}, "query.source"),
                                ("/v1/cards", {"q": "char\u202eizard"}, "query.q"),
                                ("/v1/inventory/items", {"location": "Box\r\nA"},
                                 "query.location")):
        r = await api.c.get(path, params=params, headers=api.headers["read"])
        ours(r)
        assert r.status_code == 400 and problem_fields(r) == [field], (path, r.text)
    page = await api.c.get("/catalog", params={"q": "x\x00"}, headers={"accept": "text/html"})
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")


async def test_the_price_feed_refuses_a_row_not_the_batch(api: Api, pg: TestCluster) -> None:
    source = f"refusals-{api.tag}"
    variant = await api.variant("sv01-001", "normal")
    now = datetime.now(UTC)

    def price(**fields: Any) -> dict[str, Any]:
        return {"variantId": variant, "priceCents": 100,
                "observedAt": (now - timedelta(days=1)).isoformat(), **fields}

    rows = [price(),                                                          # 0 ok
            price(currency="ÀÉÎ"),                                            # 1
            price(observedAt="2201-01-01T00:00:00Z"),                         # 2
            price(observedAt="2200-12-31T23:00:00-05:00"),                    # 3 2201 in UTC
            price(observedAt=(now + timedelta(days=1)).isoformat()),          # 4 tomorrow
            price(observedAt=(now + timedelta(minutes=1)).isoformat(), priceCents=7),  # 5 skew
            price(currency="ＵＳＤ"),                                          # 6
            price(source="a\u202eb")]                                         # 7
    r = await api.post("/v1/prices", {"source": source, "rows": rows})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["inserted"], data["rejected"]) == (2, 6)
    assert [(e["index"], e["field"].rsplit(".", 1)[1]) for e in data["errors"]] == [
        (1, "currency"), (2, "observedAt"), (3, "observedAt"), (4, "observedAt"),
        (6, "currency"), (7, "source")]
    assert "Failing row" not in r.text

    # a rule only the database knows: the batch is tried row by row, and the one row it
    # refuses is reported in our words; the others are stored
    admin = await pg.admin()
    await admin.execute("ALTER TABLE prices ADD CONSTRAINT ck_prices_not_424242 "
                        "CHECK (price_cents <> 424242) NOT VALID")
    try:
        r = await api.post("/v1/prices", {"source": source, "rows": [
            price(priceCents=11, observedAt=(now - timedelta(hours=2)).isoformat()),
            price(priceCents=424242, observedAt=(now - timedelta(hours=3)).isoformat()),
            price(priceCents=13, observedAt=(now - timedelta(hours=4)).isoformat())]})
    finally:
        await admin.execute("ALTER TABLE prices DROP CONSTRAINT ck_prices_not_424242")
        await admin.close()
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["inserted"], data["rejected"], data["duplicates"]) == (2, 1, 0)
    assert data["errors"][0]["index"] == 1
    assert "ck_prices_not_424242" in data["errors"][0]["message"]
    assert not [w for w in SERVER_WORDS if w in r.text], r.text

    # a batch of only bad rows: 422, each row named
    r = await api.post("/v1/prices", {"source": source, "rows": [price(currency="eur")]})
    ours(r)
    assert r.status_code == 422 and problem_fields(r) == ["body.rows[0].currency"]


async def test_identify_refuses_a_boolean_hp(api: Api) -> None:
    for hp in (True, False):
        r = await api.c.post("/v1/identify", json={"name": "Charizard", "hp": hp})
        ours(r)
        assert r.status_code == 400 and problem_fields(r) == ["body.hp"]
    assert (await api.c.post("/v1/identify", json={"name": "Charizard",
                                                   "hp": "12O"})).status_code == 200


async def test_items_refuse_unbounded_dates_controls_and_bidi(api: Api) -> None:
    variant = await api.variant("sv01-001", "normal")
    base = {"variantId": variant, "location": api.location()}
    for field, value in (("acquiredOn", "0001-01-01"), ("acquiredOn", "9999-12-31"),
                         ("location", "Box\r\nA"), ("location", "Box\u202eA"),
                         ("location", "Box\u2066A"), ("reason", "ok\x1b[2J"),
                         ("certNumber", "12\n34")):
        r = await api.post("/v1/inventory/items", {**base, field: value})
        ours(r)
        assert problem_fields(r) == [f"body.{field}"], (field, r.text)
    item = await api.add(**base)
    etag = {"If-Match": f'"{item["version"]}"'}
    for body in ({"acquiredOn": "9999-12-31"}, {"location": "A\u202eB"}):
        r = await api.patch(f"/v1/inventory/items/{item['id']}", body, headers=etag)
        ours(r)
    r = await api.patch(f"/v1/inventory/items/{item['id']}", {"location": "B"},
                        headers={"If-Match": '"²"'.encode()})  # type: ignore[dict-item]
    ours(r)
    assert r.status_code == 400 and problem_fields(r) == ["header.If-Match"]
    assert await api.items_at(api.location()) == 1


async def test_csv_numbers_are_ascii_and_bounded(api: Api) -> None:
    """A CSV `Average Cost Paid` of 1e30 was a 500; a quantity of `²` too; `٣` was 3."""
    loc = api.location("csv")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(layouts.COLLECTR)
    good = ["", "Pokemon", "Base Set", "Charizard", "4/102", "Holo Rare", "Holo", "Ungraded",
            "Near Mint", "1.00", "1", "", "", "", "", ""]
    for column, value in (("Average Cost Paid", "1e30"), ("Quantity", "²"),
                          ("Quantity", "٣"), ("Average Cost Paid", "١٢")):
        row = list(good)
        row[layouts.COLLECTR.index(column)] = value
        writer.writerow(row)
    r = await api.c.post("/v1/inventory/import", content=out.getvalue(),
                         params={"format": "collectr", "location": loc},
                         headers={**api.headers["write"], "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text  # a row that cannot be read never fails the file
    data = r.json()["data"]
    assert [(e["line"], e["field"]) for e in data["results"]] == [
        (2, "Average Cost Paid"), (3, "Quantity"), (4, "Quantity"), (5, "Average Cost Paid")]
    assert data["errors"] == 4 and data["itemsAdded"] == 0
    assert await api.items_at(loc) == 0


async def test_a_503_is_in_our_words(api: Api, pg: TestCluster) -> None:
    await freeze.freeze(pg.settings(), reason="refusals test", by="tester")
    try:
        r = await api.post("/v1/inventory/items", {
            "variantId": await api.variant("sv01-001", "normal"),
            "location": api.location("frozen")})
    finally:
        await freeze.thaw(pg.settings())
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert r.json()["detail"] == "writes are frozen (`cardmint db freeze`); reads still work"
    assert not [w for w in SERVER_WORDS if w in r.text]
