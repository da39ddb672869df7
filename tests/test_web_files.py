"""The files page (issue 17, item 6): upload a vendor file, preview it row by row (nothing
changes), import it, download the stock and a template of each layout."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from cardmint.db import Database
from test_web_pages import app_client, csrf_of, sign_in

FIXTURES = Path(__file__).parent / "fixtures" / "interchange"
__all__ = ["app_client"]  # the fixture, imported for pytest


async def test_upload_preview_then_import_and_download(app_client: httpx.AsyncClient,
                                                       catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    page = await c.get("/inventory/files")
    assert page.status_code == 200 and "Portfolio Name" in page.text
    where = f"web-{uuid.uuid4().hex[:8]}"
    body = (FIXTURES / "collectr.csv").read_bytes()

    async def send(action: str) -> httpx.Response:
        return await c.post("/inventory/files", data={
            "csrf": csrf_of(page.text), "mode": "sync", "location": where, "action": action,
            "format": ""}, files={"file": ("collectr.csv", body, "text/csv")})

    preview = await send("preview")
    assert preview.status_code == 200, preview.text
    assert "Preview of collectr.csv" in preview.text and "would add 2" in preview.text
    assert "watchlist row" in preview.text and "Not matched" in preview.text
    held = "SELECT count(*) FROM inventory_items WHERE location = $1"
    assert await catalog.fetchval(held, where) == 0
    done = await send("import")
    assert done.status_code == 200 and "Imported collectr.csv" in done.text
    assert await catalog.fetchval(held, where) == 13
    smaller = b"\n".join(x for x in body.split(b"\n") if b"Kangaskhan" not in x)
    missing = await c.post("/inventory/files", data={
        "csrf": csrf_of(page.text), "mode": "sync", "location": where, "action": "preview"},
        files={"file": ("collectr.csv", smaller, "text/csv")})
    assert "In stock, not in the file" in missing.text and "Kangaskhan" in missing.text
    got = await c.get("/inventory/files/export", params={"format": "dragonshield",
                                                         "location": where})
    assert got.status_code == 200 and got.text.startswith('"sep=,"')
    assert "attachment" in got.headers["content-disposition"]
    template = await c.get("/inventory/files/template", params={"format": "tcgplayer"})
    assert template.text.startswith("TCGplayer Id,Product Line,")
    bad = await c.post("/inventory/files", data={"csrf": csrf_of(page.text)},
                       files={"file": ("x.csv", b"Name,Qty\nX,1\n", "text/csv")})
    assert bad.status_code == 422 and "known layouts" in bad.text
    binary = await c.post("/inventory/files", data={"csrf": csrf_of(page.text)},
                          files={"file": ("x.csv", b"\xff\xfe\x00\x01", "text/csv")})
    assert binary.status_code in (400, 422)


async def test_a_price_entered_by_hand(app_client: httpx.AsyncClient, catalog: Database) -> None:
    c = app_client
    await sign_in(c, catalog, "write")
    card = await c.get("/cards/base2-6")
    assert "Enter a price by hand" in card.text
    page = await c.get("/cards/base2-6/price")
    assert page.status_code == 200, page.text
    variant = await catalog.fetchval("SELECT id FROM card_variants WHERE card_id = 'base2-6' "
                                     "ORDER BY position LIMIT 1")
    form = {"csrf": csrf_of(page.text), "variantId": str(variant), "condition": "LP",
            "source": "asking"}
    bad = await c.post("/cards/base2-6/price", data={**form, "price": "12.345"})
    assert bad.status_code == 422 and "more than 2 decimals" in bad.text
    assert 'value="12.345"' in bad.text  # what was typed stays
    done = await c.post("/cards/base2-6/price", data={**form, "price": "12.50"})
    assert done.status_code == 303 and done.headers["location"] == "/cards/base2-6"
    cents = await catalog.fetchval(
        "SELECT price_cents FROM prices WHERE variant_id = $1 AND condition = 'LP' AND "
        "source = 'asking' ORDER BY observed_at DESC LIMIT 1", variant)
    assert cents == 1250
