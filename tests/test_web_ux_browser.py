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
