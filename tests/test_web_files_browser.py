"""The files page in a real browser (issue 17, item 6): choose a Collectr file, see the
upload's progress and the per-row preview, import it. Pages saved under
artifacts/screenshots/."""

from __future__ import annotations

import uuid
from pathlib import Path

from browser import SignedIn, WebServer, chromium, screenshot, signed_in, web_server  # noqa: F401
from cardmint.db import Database

FIXTURES = Path(__file__).parent / "fixtures" / "interchange"


async def test_upload_preview_then_import(signed_in: SignedIn,  # noqa: F811
                                          web_server: WebServer,  # noqa: F811
                                          catalog: Database) -> None:
    page = await signed_in("write")
    await page.goto(f"{web_server.url}/inventory/files")
    where = f"browser-{uuid.uuid4().hex[:8]}"
    await page.get_by_label("File (CSV)").set_input_files(str(FIXTURES / "collectr.csv"))
    await page.locator("#file-mode").select_option("sync")
    await page.locator("#file-location").fill(where)
    await page.get_by_role("button", name="Preview").click()
    await page.get_by_role("heading", name="Preview of collectr.csv").wait_for()
    assert await page.get_by_role("row").filter(has_text="Umbreon VMAX").count() == 2
    assert await page.get_by_text("watchlist row: wanted, not owned").count() == 1
    await screenshot(page, "files-preview")
    held = "SELECT count(*) FROM inventory_items WHERE location = $1"
    assert await catalog.fetchval(held, where) == 0
    await page.locator("#file-location").fill(where)  # the page came back with the form
    await page.get_by_label("File (CSV)").set_input_files(str(FIXTURES / "collectr.csv"))
    await page.get_by_role("button", name="Import").click()
    await page.get_by_role("heading", name="Imported collectr.csv").wait_for()
    await screenshot(page, "files-imported")
    assert await catalog.fetchval(held, where) == 13
