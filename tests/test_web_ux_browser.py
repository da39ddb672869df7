"""Issue 17's flows in a real browser (Debian's chromium through Playwright, against a real
`cardmint serve`): card pictures with their offline placeholder; adding by name with
suggestions; discarding a capture in review; confirming a sale. The test machine is
offline, and TCGdex's host is also refused here, so the placeholder path is certain."""

from __future__ import annotations

import re
from typing import Any

from browser import SignedIn, WebServer, chromium, in_review, screenshot, signed_in, web_server  # noqa: F401
from cardmint.db import Database

IMAGES = "https://assets.tcgdex.net/**"


async def offline(page: Any) -> None:
    """TCGdex unreachable, whatever the machine's network."""
    await page.route(IMAGES, lambda route: route.abort("internetdisconnected"))


async def test_pictures_lazy_from_tcgdex_with_a_placeholder_offline(
        signed_in: SignedIn, web_server: WebServer) -> None:  # noqa: F811
    page = await signed_in("read")
    await offline(page)
    response = await page.goto(f"{web_server.url}/catalog?q=charizard+set%3Abase1")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "img-src 'self' data: https://assets.tcgdex.net;" in csp  # that host only
    first = page.locator("td.pic img").first
    assert await first.get_attribute("loading") == "lazy"
    assert await first.get_attribute("src") == (
        "https://assets.tcgdex.net/en/base/base1/4/low.webp")
    await page.goto(f"{web_server.url}/cards/base1-4")
    big = page.locator(".card-img.large img")
    assert (await big.get_attribute("src") or "").endswith("/base1/4/high.webp")
    await big.evaluate("img => img.loading = 'eager'")  # in view anyway; no waiting on lazy
    await page.wait_for_selector(".card-img.large img.missing", state="attached")
    assert await page.locator(".card-img.large .card-img-none").is_visible()
    assert "No picture" in await page.locator(".card-img.large").inner_text()
    await screenshot(page, "card-picture-offline")


async def test_discard_a_capture_in_review_with_its_reason(
        signed_in: SignedIn, web_server: WebServer, catalog: Database) -> None:  # noqa: F811
    capture = await in_review(catalog, "Charizard")  # candidates with several printings
    page = await signed_in("write")
    await offline(page)
    await page.goto(f"{web_server.url}/review")
    card = page.locator(f"article[aria-labelledby='cap-{capture['id']}']")
    # one clear button per candidate: each names its card
    buttons = await card.get_by_role("button", name=re.compile(r"^It is ")).all_inner_texts()
    assert len(buttons) == len(set(buttons)) >= 2, buttons
    assert await card.locator("select[name^='variant-']").count() >= 1  # a printing picker
    await screenshot(page, "review-candidates")
    await card.get_by_label("or in your words").fill("a photo of the binder page")
    await card.get_by_role("button", name=f"Discard capture {capture['id']}").click()
    await page.wait_for_url(re.compile(rf"/review\?discarded={capture['id']}"))
    assert "discarded" in await page.get_by_role("status").first.inner_text()
    assert await page.locator(f"article[aria-labelledby='cap-{capture['id']}']").count() == 0
    row = await catalog.fetchrow("SELECT status, ocr->'discarded' AS d FROM captures "
                                 "WHERE id = $1", capture["id"])
    assert row["status"] == "discarded"
    assert row["d"]["reason"] == "a photo of the binder page" and row["d"]["by"]
    await screenshot(page, "review-discarded")


async def test_add_by_name_with_suggestions_and_the_keyboard(
        signed_in: SignedIn, web_server: WebServer, catalog: Database) -> None:  # noqa: F811
    page = await signed_in("write")
    await offline(page)
    await page.goto(f"{web_server.url}/catalog")
    await page.locator("body").click()
    await page.keyboard.press("/")  # "/" focuses the search box
    assert await page.evaluate("document.activeElement.id") == "q"
    await page.goto(f"{web_server.url}/inventory/add")
    box = page.get_by_label("Card name or id")
    await box.press_sequentially("charizard set:base1", delay=20)
    option = page.get_by_role("option").filter(has_text="base1-4")
    await option.wait_for()
    await screenshot(page, "add-suggestions")
    for _ in range(await page.get_by_role("option").count()):  # down to base1-4
        await box.press("ArrowDown")
        if await option.get_attribute("aria-selected") == "true":
            break
    await box.press("Enter")
    await page.wait_for_url(re.compile(r"/inventory/add\?card=base1-4"))
    printing = page.get_by_label("Printing")
    names = await printing.locator("option").all_inner_texts()
    assert "Holo · Shadowless · 1st Edition" in names, names  # named in full
    await printing.select_option(label="Holo · Unlimited")
    await page.get_by_label("Location").fill("Case 1")
    quantity = page.get_by_label("Quantity")
    await quantity.fill("2")
    await quantity.press("Enter")  # Enter submits
    await page.wait_for_url(re.compile(r"/inventory/add\?added=2"))
    assert "Added 2 items" in await page.get_by_role("status").first.inner_text()
    await screenshot(page, "add-added-two")
    ids = await page.locator(".notice.ok a[href^='/inventory/items/']").all_inner_texts()
    first = int(ids[0].lstrip("#"))
    row = await catalog.fetchrow(
        "SELECT p.card_id, v.subtype, i.location FROM inventory_items i JOIN products p ON "
        "p.id = i.product_id JOIN card_variants v ON v.id = p.variant_id WHERE i.id = $1",
        first)
    assert (row["card_id"], row["subtype"], row["location"]) == ("base1-4", "unlimited",
                                                                 "Case 1")


async def test_sell_asks_for_confirmation(signed_in: SignedIn,  # noqa: F811
                                          web_server: WebServer) -> None:  # noqa: F811
    page = await signed_in("write")
    await offline(page)
    await page.goto(f"{web_server.url}/inventory/add?card=sv01-001")
    await page.get_by_role("button", name="Add to inventory").click()
    await page.wait_for_url(re.compile(r"/inventory/items/\d+\?done=added"))
    item_url = page.url.split("?")[0]
    await page.get_by_label("Sale amount (USD)").fill("12.50")
    await page.get_by_role("button", name="Sell", exact=True).click()
    confirm = page.get_by_role("button", name="Yes, sell it for $12.50")
    await confirm.wait_for()
    assert "This is final" in await page.content()
    await screenshot(page, "sell-confirm")
    await page.get_by_role("link", name="No, keep it").click()  # nothing happened
    await page.wait_for_url(item_url)
    assert "in stock" in await page.locator(".badge").first.inner_text()
    await page.get_by_label("Sale amount (USD)").fill("12.50")
    await page.get_by_role("button", name="Sell", exact=True).click()
    await page.get_by_role("button", name="Yes, sell it for $12.50").click()
    await page.wait_for_url(re.compile(r"\?done=sell"))
    assert "sold" in await page.locator(".badge").first.inner_text()
