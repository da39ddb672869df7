"""The web pages as routes: the real app in-process (httpx), the session's cluster and its
full catalog. Sign-in, CSRF, query errors, stale forms, and no 500 for odd input."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from browser import in_review, token
from cardmint.api.app import create_app
from cardmint.db import Database
from cardmint.inventory import prices
from support import TestCluster, replicas_caught_up, serving

HTML = {"accept": "text/html"}


@pytest.fixture
async def app_client(pg: TestCluster, catalog: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pg.settings())
    async with serving(app) as c:
        # loopback http, as `cardmint serve` is reached: the cookie may go without Secure
        c.base_url = httpx.URL("http://127.0.0.1")
        c.headers.update(HTML)
        yield c


async def sign_in(c: httpx.AsyncClient, db: Database, scope: str) -> str:
    secret = await token(db, scope)
    r = await c.post("/signin", data={"token": secret, "next": "/inventory"})
    assert r.status_code == 303 and r.headers["location"] == "/inventory"
    return secret


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def version_of(html: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', html)
    assert found
    return found.group(1)


async def add_item(c: httpx.AsyncClient, card_id: str = "base1-4", **extra: str) -> int:
    page = await c.get(f"/inventory/add?card={card_id}")
    assert page.status_code == 200, page.text
    variant = re.search(r'<option value="(\d+)"', page.text).group(1)  # type: ignore[union-attr]
    r = await c.post("/inventory/add", data={"csrf": csrf_of(page.text), "cardId": card_id,
                                             "variantId": variant, "condition": "NM",
                                             "language": "en", **extra})
    assert r.status_code == 303, r.text
    return int(r.headers["location"].split("/")[-1].split("?")[0])


async def test_pages_redirect_to_sign_in_and_scopes_are_checked(
        app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    for path in ("/inventory", "/review", "/inventory/items/1", "/inventory/add"):
        r = await c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=%2F")
    assert (await c.get("/catalog")).status_code == 200  # the catalog is public, as in the API
    secret = await sign_in(c, catalog, "read")
    assert (await c.get("/inventory")).status_code == 200
    r = await c.get("/inventory/add")
    assert r.status_code == 303 and r.headers["location"].endswith("&needs=write")
    page = await c.get(r.headers["location"])
    assert "needs a token with the <strong>write</strong> scope" in page.text
    assert secret not in page.text  # the token is never shown back


async def test_sign_in_cookie_and_refusals(app_client: httpx.AsyncClient,
                                           catalog: Database) -> None:
    c = app_client
    secret = await token(catalog, "read")
    r = await c.post("/signin", data={"token": secret, "next": "https://evil.example/"})
    assert r.headers["location"] == "/catalog"  # never an open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    remote = await c.post("http://cards.example/signin", data={"token": secret})
    assert "secure" in remote.headers["set-cookie"].lower()  # beyond loopback: Secure
    bad = await c.post("/signin", data={"token": "cm_not-a-real-token-at-all"})
    assert bad.status_code == 401 and "not valid" in bad.text
    assert "cm_not-a-real-token" not in bad.text
    empty = await c.post("/signin", data={"token": "  "})
    assert empty.status_code == 400 and "Paste a token" in empty.text
    foreign = await c.post("/signin", data={"token": secret},
                           headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403


async def test_failed_sign_ins_meet_the_api_limiter(pg: TestCluster, catalog: Database) -> None:
    app = create_app(pg.settings())
    async with serving(app) as c:
        for _ in range(10):
            assert (await c.post("/signin", data={"token": "cm_wrong"})).status_code == 401
        r = await c.post("/signin", data={"token": "cm_wrong"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        api = await c.get("/v1/inventory/items", headers={"authorization": "Bearer cm_x"})
        assert api.status_code == 429  # one limiter for the API and the pages
        assert api.headers["retry-after"] == "2"  # backing off
        # a valid token is never refused: the others behind the address are not locked out
        r = await c.post("/signin", data={"token": await token(catalog, "read")})
        assert r.status_code == 303


async def test_write_forms_need_the_csrf_token(app_client: httpx.AsyncClient,
                                               catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    item_id = await add_item(c)
    before = await catalog.fetchval("SELECT count(*) FROM inventory_items")
    page = await c.get(f"/inventory/items/{item_id}")
    version = version_of(page.text)
    for data in ({"location": "Box 9", "version": version},
                 {"location": "Box 9", "version": version, "csrf": "0" * 64}):
        r = await c.post(f"/inventory/items/{item_id}/move", data=data)
        assert r.status_code == 403 and "Nothing was changed" in r.text
    r = await c.post("/inventory/add", data={"cardId": "base1-4", "variantId": "1"})
    assert r.status_code == 403
    assert await catalog.fetchval("SELECT count(*) FROM inventory_items") == before
    item = await catalog.fetchrow("SELECT location, version FROM inventory_items WHERE id = $1",
                                  item_id)
    assert item["location"] is None and str(item["version"]) == version


async def test_a_bad_query_is_shown_with_its_position(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/catalog", params={"q": "charizard hp:[100 TO"})
    assert r.status_code == 400
    assert "The query could not be read" in r.text and "at character" in r.text
    assert '<span class="caret">^</span>' in r.text
    ok = await app_client.get("/catalog", params={"q": "charizard set:base1"})
    assert ok.status_code == 200 and "/cards/base1-4" in ok.text and "Rare Holo" in ok.text


async def test_a_stale_form_says_it_changed_and_saves_nothing(
        app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    item_id = await add_item(c, location="Binder A")
    opened = await c.get(f"/inventory/items/{item_id}")  # two tabs open the same version
    csrf, version = csrf_of(opened.text), version_of(opened.text)
    first = await c.post(f"/inventory/items/{item_id}/move",
                         data={"csrf": csrf, "version": version, "location": "Binder B"})
    assert first.status_code == 303
    second = await c.post(f"/inventory/items/{item_id}/reserve",
                          data={"csrf": csrf, "version": version})
    assert second.status_code == 412 and "changed since you opened it" in second.text
    row = await catalog.fetchrow("SELECT status, location FROM inventory_items WHERE id = $1",
                                 item_id)
    assert (row["status"], row["location"]) == ("IN_STOCK", "Binder B")
    ledger = await c.get(f"/inventory/items/{item_id}")
    assert "moved" in ledger.text and "Binder A → Binder B" in ledger.text


async def test_validation_errors_sit_next_to_their_field(
        app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    page = await c.get("/inventory/add?card=base1-4")
    csrf = csrf_of(page.text)
    variant = re.search(r'<option value="(\d+)"', page.text).group(1)  # type: ignore[union-attr]
    base = {"csrf": csrf, "cardId": "base1-4", "variantId": variant, "condition": "NM",
            "language": "en"}
    for field, value, words in (("acquisitionCost", "abc", "not an amount"),
                                ("grade", "11", "1 to 10"),
                                ("condition", "MINT", "must be one of"),
                                ("language", "English", "language code"),
                                ("acquiredOn", "yesterday", "not a date")):
        r = await c.post("/inventory/add", data={**base, field: value})
        assert r.status_code == 422, (field, r.text[:300])
        error = re.search(rf'<p id="e-{field}" class="error" role="alert">([^<]*)<', r.text)
        assert error and words in error.group(1), (field, error)
    # several at once: each is shown, not only the first
    r = await c.post("/inventory/add", data={**base, "acquisitionCost": "abc", "grade": "11",
                                             "acquiredOn": "yesterday"})
    assert r.status_code == 422
    for field in ("acquisitionCost", "grade", "acquiredOn"):
        assert f'<p id="e-{field}" class="error"' in r.text, field
    item_id = await add_item(c)
    item = await c.get(f"/inventory/items/{item_id}")
    r = await c.post(f"/inventory/items/{item_id}/sell",
                     data={"csrf": csrf, "version": version_of(item.text), "amount": "1.234"})
    assert r.status_code == 422 and 'id="e-amount"' in r.text and "2 decimals" in r.text


async def test_odd_input_is_a_4xx_page_never_a_500(app_client: httpx.AsyncClient,
                                                   catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    csrf = csrf_of((await c.get("/inventory")).text)
    gets = ["/cards/" + "x" * 100, "/cards/nope-1", "/inventory/items/abc",
            "/inventory/items/99999999999999999999", "/inventory/items/0",
            "/inventory?condition=MINT", "/inventory?status=LOST", "/inventory?page=0",
            "/inventory?graded=maybe", "/inventory?set=" + "s" * 80, "/review?page=x",
            "/catalog?page=-1", "/catalog?sort=hp;drop", "/catalog?q=" + "(" * 40,
            "/inventory/add?card=nope-1", "/no-such-page", "/signin?next=//evil"]
    for path in gets:
        r = await c.get(path)
        assert 200 <= r.status_code < 500, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html"), path
    posts = [("/inventory/items/999999999/sell", {"version": "1", "amount": "5"}),
             ("/inventory/items/abc/move", {"version": "1"}),
             ("/inventory/items/1/explode", {"version": "1"}),
             ("/review/999999999/resolve", {"cardId": "base1-4"}),
             ("/review/1/resolve", {"cardId": ""}),
             ("/inventory/add", {"cardId": "nope-1", "variantId": "1"}),
             ("/inventory/add", {"cardId": "base1-4", "variantId": "-3"})]
    for path, data in posts:
        r = await c.post(path, data={"csrf": csrf, **data})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
    raw = await c.post("/inventory/add", content=b"\xff\xfe", headers={
        "content-type": "application/json"})
    assert raw.status_code == 403  # not a form: no CSRF token, refused before anything


async def test_card_page_shows_printings_prices_and_items(
        app_client: httpx.AsyncClient, catalog: Database, pg: TestCluster) -> None:
    c = app_client
    anonymous = await c.get("/cards/base1-4")
    assert anonymous.status_code == 200 and "Sign in</a> to see" in anonymous.text
    await sign_in(c, catalog, "write")
    item_id = await add_item(c)
    variant = await catalog.fetchval("SELECT variant_id FROM products p JOIN inventory_items i "
                                     "ON i.product_id = p.id WHERE i.id = $1", item_id)
    now, source = datetime.now(UTC), f"web-test-{item_id}"
    async with catalog.transaction() as tx:  # small and in the past: no other test's concern
        await prices.ingest(tx, [{"variantId": variant, "condition": "NM", "priceCents": c2,
                                  "observedAt": (now - timedelta(days=d)).isoformat()}
                                 for d, c2 in ((30, 300), (20, 320), (10, 310))],
                            source=source)
    try:
        await replicas_caught_up(pg)  # prices are read from a replica, as the API reads them
        r = await c.get("/cards/base1-4")
    finally:
        await catalog.execute("DELETE FROM prices WHERE source = $1", source)
    assert r.status_code == 200
    prices_part = r.text[r.text.find('id="prices-h"'):][:2000]
    assert "<svg" in prices_part and 'class="chart"' in prices_part, prices_part
    assert "Price history of Charizard" in prices_part
    assert f'href="/inventory/items/{item_id}"' in r.text and "Printings" in r.text


async def test_resolve_a_review_item(app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    capture = await in_review(catalog)
    await sign_in(c, catalog, "write")
    page = await c.get("/review")
    assert f"Capture {capture['id']}" in page.text
    assert capture["reasons"][0]["message"] in page.text
    chosen = capture["candidates"][0]["card_id"]
    r = await c.post(f"/review/{capture['id']}/resolve",
                     data={"csrf": csrf_of(page.text), "cardId": chosen})
    assert r.status_code == 303 and f"resolved={capture['id']}" in r.headers["location"]
    done = await c.get(r.headers["location"])
    assert f"Capture {capture['id']} resolved" in done.text
    again = await c.post(f"/review/{capture['id']}/resolve",
                         data={"csrf": csrf_of(page.text), "cardId": chosen})
    assert again.status_code == 409 and "already" in again.text


async def test_pages_stay_out_of_the_openapi_schema(pg: TestCluster) -> None:
    paths = create_app(pg.settings()).openapi()["paths"]
    assert not [p for p in paths if not p.startswith(("/v1", "/health", "/metrics"))]


async def test_a_revoked_tokens_cookie_is_dropped_after_one_failed_check(
        app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    secret = await sign_in(c, catalog, "read")
    await catalog.execute("UPDATE api_tokens SET revoked_at = now() WHERE owner = $1",
                          await catalog.fetchval("SELECT owner FROM api_tokens ORDER BY id "
                                                 "DESC LIMIT 1"))
    r = await c.get("/inventory")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    dropped = r.headers["set-cookie"]
    assert dropped.startswith("cardmint_session=") and "Max-Age=0" in dropped
    assert secret not in dropped
    for _ in range(15):  # more than the limiter allows: the cookie is gone, nothing counts
        assert (await c.get("/catalog")).status_code == 200


async def test_remove_from_stock_is_final_and_in_the_ledger(
        app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    item_id = await add_item(c)
    page = await c.get(f"/inventory/items/{item_id}")
    assert "Remove from stock" in page.text
    form = {"csrf": csrf_of(page.text), "version": version_of(page.text),
            "reason": "water damage"}
    # final and one click away: a page asks first, and nothing changes until confirmed
    ask = await c.post(f"/inventory/items/{item_id}/remove", data=form)
    assert ask.status_code == 200 and "This is final" in ask.text
    assert 'name="confirm" value="yes"' in ask.text and "No, keep it" in ask.text
    assert await catalog.fetchval("SELECT status FROM inventory_items WHERE id = $1",
                                  item_id) == "IN_STOCK"
    r = await c.post(f"/inventory/items/{item_id}/remove", data={**form, "confirm": "yes"})
    assert r.status_code == 303
    after = await c.get(r.headers["location"])
    assert "Removed from stock." in after.text  # it says so
    assert "removed" in after.text and "water damage" in after.text
    assert "Remove from stock" not in after.text  # final: no more status forms
    assert await catalog.fetchval("SELECT status FROM inventory_items WHERE id = $1",
                                  item_id) == "REMOVED"


async def test_resolving_sets_the_items_condition_and_location(
        app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    capture = await in_review(catalog)
    await sign_in(c, catalog, "write")
    page = await c.get("/review")
    assert f'id="cond-{capture["id"]}"' in page.text
    chosen = capture["candidates"][0]["card_id"]
    bad = await c.post(f"/review/{capture['id']}/resolve",
                       data={"csrf": csrf_of(page.text), "cardId": chosen,
                             "condition": "MINT"})
    assert bad.status_code == 422 and "Condition: condition must be one of" in bad.text
    r = await c.post(f"/review/{capture['id']}/resolve",
                     data={"csrf": csrf_of(page.text), "cardId": chosen, "condition": "LP",
                           "location": "Binder Z"})
    assert r.status_code == 303, r.text
    item = int(r.headers["location"].split("item=")[1])
    row = await catalog.fetchrow("SELECT p.condition, i.location FROM inventory_items i "
                                 "JOIN products p ON p.id = i.product_id WHERE i.id = $1", item)
    assert (row["condition"], row["location"]) == ("LP", "Binder Z")


async def test_remote_images_can_be_turned_off(pg: TestCluster, catalog: Database) -> None:
    """CARDMINT_REMOTE_IMAGES=false: placeholders only, and TCGdex's host is not in the
    policy (it is, for that host alone, by default: test_web_ux_browser)."""
    async with serving(create_app(pg.settings(remote_images=False))) as c:
        c.headers.update(HTML)
        r = await c.get("/cards/base1-4")
        assert r.status_code == 200
        assert "tcgdex" not in r.text and "tcgdex" not in r.headers["content-security-policy"]
        assert 'aria-label="Charizard, Base Set 4: no picture"' in r.text


async def test_add_by_name_without_javascript_and_in_bulk(app_client: httpx.AsyncClient,
                                                          catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    found = await c.get("/inventory/add", params={"q": "charizard set:base1"})
    assert found.status_code == 200 and 'href="/inventory/add?card=base1-4"' in found.text
    hint = await c.get("/inventory/add/suggest", params={"q": 'set:"Base Sett"'})
    assert "did you mean set:base1" in hint.json()["hints"][0]
    csrf = csrf_of(found.text)
    loc = f"bulk-{uuid.uuid4().hex[:8]}"
    normal = await catalog.fetchval("SELECT id FROM card_variants WHERE card_id = 'sv01-001' "
                                    "AND type = 'normal'")
    first = f"2 sv01-001 #{normal}"
    bad = await c.post("/inventory/add/bulk", data={
        "csrf": csrf, "location": loc, "lines": f"{first}\n1 base1-4\n1 nosuchcard-zz\n"})
    assert bad.status_code == 422 and "Nothing was added" in bad.text
    assert "Line 2" in bad.text and "printings, add one" in bad.text  # never guessed
    assert "Line 3" in bad.text and "Line 1" not in bad.text  # every problem at once
    assert await catalog.fetchval("SELECT count(*) FROM inventory_items WHERE location = $1",
                                  loc) == 0
    holo = await catalog.fetchval("SELECT id FROM card_variants WHERE card_id = 'base1-4' "
                                  "AND subtype = 'unlimited'")
    good = await c.post("/inventory/add/bulk", data={
        "csrf": csrf, "location": loc, "lines": f"{first}\n1 base1-4 #{holo}\n"})
    assert good.status_code == 303 and "added=3" in good.headers["location"]
    assert await catalog.fetchval("SELECT count(*) FROM inventory_items WHERE location = $1",
                                  loc) == 3


def test_commands_show_as_code_not_backticks() -> None:
    from cardmint.web.render import code

    assert str(code("to fix: `cardmint cluster rejoin node2` <now>")) == (
        "to fix: <code>cardmint cluster rejoin node2</code> &lt;now&gt;")
    assert str(code("a lone ` stays")) == "a lone ` stays"


def test_prices_far_apart_get_a_chart_each() -> None:
    """Issue 17 item 8: a $9,000 line beside a $300 one drew the cheap one flat."""
    from cardmint.web.catalog_pages import by_magnitude
    from cardmint.web.charts import Series

    dear = Series("Holo · Shadowless · 1st Edition · NM", [(1.0, 9000.0), (2.0, 9400.0)])
    mid = Series("Holo · Unlimited · NM", [(1.0, 300.0), (2.0, 320.0)])
    near = Series("Holo · Unlimited · LP", [(1.0, 150.0), (2.0, 180.0)])
    groups = by_magnitude([mid, dear, near])
    assert [[s.label for s in g] for g, _ in groups] == [[dear.label], [mid.label, near.label]]
    assert groups[0][1] == ", 1 of 2: up to $9,400.00"
    assert by_magnitude([mid, near]) == [([mid, near], "")]
