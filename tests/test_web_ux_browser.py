"""Issue 17's flows in a real browser (Debian's chromium through Playwright, against a real
`cardmint serve`): card pictures with their offline placeholder; adding by name with
suggestions; discarding a capture in review; confirming a sale. The test machine is
offline, and TCGdex's host is also refused here, so the placeholder path is certain."""

from __future__ import annotations

from typing import Any

from browser import SignedIn, WebServer, chromium, in_review, screenshot, signed_in, web_server  # noqa: F401

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
