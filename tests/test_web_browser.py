"""The pages in a real browser (Debian's chromium, headless, through Playwright) against a
real `cardmint serve`: search and open a card; add an item, move it, read its ledger;
resolve a review item with a click. Each page is saved under artifacts/screenshots/."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from browser import SignedIn, WebServer, chromium, in_review, screenshot, signed_in, web_server  # noqa: F401
from cardmint.db import Database
from cardmint.inventory import prices
from support import TestCluster, replicas_caught_up


async def test_sign_in_page(chromium: Any, web_server: WebServer) -> None:  # noqa: F811
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{web_server.url}/inventory")
        assert "/signin?next=%2Finventory" in page.url  # not signed in: sent to sign in
        await page.get_by_label("Token").fill("cm_not-a-token")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_text("That token is not valid").wait_for()
        assert await page.get_by_label("Token").input_value() == ""  # never echoed back
        assert "cardmint token create" in await page.content()
        await screenshot(page, "signin")
    finally:
        await context.close()


async def test_search_and_open_a_card(signed_in: SignedIn,  # noqa: F811
                                      web_server: WebServer,  # noqa: F811
                                      catalog: Database, pg: TestCluster) -> None:
    # a price history, so the card page draws its chart (removed at the end)
    source, now = "browser-test", datetime.now(UTC)
    variant = await catalog.fetchval("SELECT v.id FROM card_variants v WHERE v.card_id = "
                                     "'base1-4' ORDER BY v.id LIMIT 1")
    async with catalog.transaction() as tx:
        await prices.ingest(tx, [{"variantId": variant, "condition": "NM", "priceCents": c,
                                  "observedAt": (now - timedelta(days=d)).isoformat()}
                                 for d, c in ((60, 41_000), (45, 43_500), (30, 42_250),
                                              (15, 46_000), (1, 47_900))], source=source)
    await replicas_caught_up(pg)  # the card page reads prices from a replica
    try:
        await _search_and_open(signed_in, web_server)
    finally:
        await catalog.execute("DELETE FROM prices WHERE source = $1", source)


async def _search_and_open(signed_in: SignedIn, web_server: WebServer) -> None:  # noqa: F811
    page = await signed_in("read")
    search = page.get_by_label("Search cards")
    await search.fill("charizard set:base1")
    await search.press("Enter")
    await page.wait_for_url(re.compile(r"/catalog\?q="))
    row = page.get_by_role("row").filter(has_text="Base")
    assert await row.count() >= 1
    await screenshot(page, "catalog-search")
    await page.get_by_role("link", name="Charizard").first.click()
    await page.wait_for_url(f"{web_server.url}/cards/base1-4")
    assert await page.get_by_role("heading", name="Printings").is_visible()
    assert await page.get_by_role("heading", name="In the inventory").is_visible()
    assert await page.locator("section[aria-labelledby=prices-h] svg").count() >= 1
    await screenshot(page, "card")
    # a query the language cannot read is shown with where it went wrong
    await page.goto(f"{web_server.url}/catalog")
    await page.get_by_label("Search cards").fill("hp:[100 TO")
    await page.get_by_role("button", name="Search").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert "at character" in await alert.inner_text()
    await screenshot(page, "catalog-query-error")


async def test_add_move_and_read_the_ledger(signed_in: SignedIn,  # noqa: F811
                                            web_server: WebServer) -> None:  # noqa: F811
    page = await signed_in("write")
    await page.goto(f"{web_server.url}/cards/base1-2")
    await page.get_by_role("link", name="Add to inventory").click()
    await page.get_by_label("Location").fill("Binder A")
    await page.get_by_label("Cost (USD)").fill("not money")
    await page.get_by_role("button", name="Add to inventory").click()
    error = page.locator("#e-acquisitionCost")  # the refusal sits next to its field
    await error.wait_for()
    assert "not an amount of dollars" in await error.inner_text()
    await screenshot(page, "add-item-error")
    await page.get_by_label("Cost (USD)").fill("12.50")
    await page.get_by_role("button", name="Add to inventory").click()
    await page.wait_for_url(re.compile(r"/inventory/items/\d+\?done=added"))
    item_url = page.url.split("?")[0]
    await page.get_by_label("New location").fill("Binder B")
    await page.get_by_role("button", name="Move", exact=True).click()
    await page.wait_for_url(re.compile(r"\?done=moved"))
    ledger = page.get_by_role("table").last
    text = await ledger.inner_text()
    assert "acquired" in text and "moved" in text and "Binder A → Binder B" in text
    await page.get_by_role("button", name="Reserve", exact=True).click()
    await page.wait_for_url(re.compile(r"\?done=reserve"))
    assert "reserved" in await page.get_by_role("table").last.inner_text()
    await screenshot(page, "item")
    await page.goto(f"{web_server.url}/inventory?location=Binder+B&status=RESERVED")
    assert await page.locator(f'a[href="{item_url.removeprefix(web_server.url)}"]').count() == 1
    await screenshot(page, "inventory")


async def test_resolve_a_review_item_with_a_click(signed_in: SignedIn,  # noqa: F811
                                                  web_server: WebServer,  # noqa: F811
                                                  catalog: Database) -> None:
    capture = await in_review(catalog)
    page = await signed_in("write")
    await page.get_by_role("link", name="Review").click()
    await page.wait_for_url(f"{web_server.url}/review")
    card = page.locator(f"article[aria-labelledby='cap-{capture['id']}']")
    assert capture["reasons"][0]["message"] in await card.inner_text()
    await screenshot(page, "review")
    await card.get_by_role("button", name=re.compile(r"^It is ")).first.click()
    await page.wait_for_url(re.compile(rf"/review\?resolved={capture['id']}"))
    notice = page.get_by_role("status").first
    assert f"Capture {capture['id']} resolved" in await notice.inner_text()
    assert await page.locator(f"article[aria-labelledby='cap-{capture['id']}']").count() == 0
    await screenshot(page, "review-resolved")
