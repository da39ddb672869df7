"""The scan page in a real browser (Debian's chromium, headless, phone-sized) against a real
`cardmint serve`: two photos taken in a row, each shown with its result as the worker
finishes it (one identified and stocked with the batch's condition and location, one sent
to review), and the review queue showing the photo beside the candidates."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
from PIL import Image

from browser import SignedIn, WebServer, chromium, screenshot, signed_in, web_server  # noqa: F401
from cardmint.db import Database
from cardmint.intake import captures
from cardmint.intake.worker import Worker
from scan_photos import need_fonts, photo
from support import poll


def _noise() -> bytes:
    img = Image.fromarray(np.random.default_rng(9).integers(0, 255, (600, 450, 3),
                                                             dtype=np.uint8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=60)
    return out.getvalue()


async def test_photos_from_the_scan_page_are_stocked_or_sent_to_review(
        signed_in: SignedIn, web_server: WebServer, catalog: Database) -> None:  # noqa: F811
    need_fonts()
    page = await signed_in("write")
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await page.goto(f"{web_server.url}/scan")
    camera = page.get_by_label("Photo of a card")
    assert await camera.get_attribute("capture") == "environment"
    assert await camera.get_attribute("accept") == "image/*"
    shelf = f"shelf-{uuid.uuid4().hex[:6]}"
    await page.get_by_label("Condition").select_option("LP")
    await page.get_by_label("Location").fill(shelf)

    # two photos in a row, as a phone sends them: each as soon as it is taken
    await camera.set_input_files([{"name": "card.jpg", "mimeType": "image/jpeg",
                                   "buffer": photo("sm5-43", "perspective", seed=7)}])
    await camera.set_input_files([{"name": "blurry.jpg", "mimeType": "image/jpeg",
                                   "buffer": _noise()}])
    items = page.locator("#scan-results li[data-capture]")
    await poll(lambda: items.count(), timeout=30)

    async def both_sent() -> list[int] | None:
        ids = [int(x) for x in await items.evaluate_all(
            "els => els.map(e => e.dataset.capture)")]
        return ids if len(ids) == 2 else None
    newest, first = await poll(both_sent, timeout=30)  # the list shows the newest first

    worker = Worker(catalog, name="web-scan-test", listen=False)

    async def processed() -> bool:
        await worker.run_once(limit=1)
        states = [(await captures.get(catalog, i) or {}).get("status") for i in (first, newest)]
        return all(s in ("processed", "needs_review") for s in states)
    await poll(processed, timeout=90)

    stocked = page.locator(f"#scan-results li[data-capture='{first}']")
    await stocked.get_by_text("stocked as item").wait_for(timeout=30_000)
    text = await stocked.inner_text()
    assert "Identified: Electabuzz" in text
    review = page.locator(f"#scan-results li[data-capture='{newest}']")
    await review.get_by_text("Sent to review").wait_for(timeout=30_000)
    assert await stocked.locator("img.scan-thumb").evaluate("i => i.naturalWidth") > 0
    await screenshot(page, "scan-phone")

    item: Any = await catalog.fetchrow(
        "SELECT i.location, p.condition, p.card_id FROM inventory_items i JOIN products p "
        "ON p.id = i.product_id WHERE i.id = (SELECT (ocr -> 'item' ->> 'item_id')::bigint "
        "FROM captures WHERE id = $1)", first)
    assert dict(item) == {"location": shelf, "condition": "LP", "card_id": "sm5-43"}

    # the review queue shows the photo beside the candidates
    await page.set_viewport_size({"width": 1280, "height": 900})
    shown = page.get_by_alt_text(f"Photo of capture {newest}")
    for number in range(1, 50):  # oldest first: other tests' captures may come before
        await page.goto(f"{web_server.url}/review?page={number}")
        if await shown.count() or not await page.get_by_role("link", name="Next").count():
            break
    await shown.scroll_into_view_if_needed()
    assert await shown.evaluate("i => i.complete && i.naturalWidth") > 0
    await screenshot(page, "review-with-photo")
