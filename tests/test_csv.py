"""Inventory files through the real app (API, CLI, page): a file is answered row by row
(never failed by a bad row), the header picks the layout, refusals write nothing, the
exports download and import back, unmatched rows can go to the review queue."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cardmint.db import Database
from cardmint.inventory.interchange import layouts
from inventory_helpers import Api, opened, problem_fields
from support import TestCluster

FIXTURES = Path(__file__).parent / "fixtures" / "interchange"
HEADER = ",".join(layouts.TCGPLAYER)


@pytest.fixture
async def api(pg: TestCluster, catalog: Database) -> AsyncIterator[Api]:
    async with opened(pg) as a:
        yield a


async def export(api: Api, fmt: str, location: str) -> str:
    r = await api.get("/v1/inventory/export", format=fmt, location=location)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return r.text


async def import_(api: Api, text: str | bytes, scope: str = "write",
                  **params: Any) -> httpx.Response:
    return await api.c.post("/v1/inventory/import", content=text, params=params,
                            headers={**api.headers[scope], "Content-Type": "text/csv"})


async def test_a_file_is_answered_row_by_row(api: Api) -> None:
    a, b = api.location("a"), api.location("b")
    text = (FIXTURES / "tcgplayer-pricing.csv").read_text()
    r = await import_(api, text, location=a, dryRun="true")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["format"] == "tcgplayer" and data["dryRun"] and data["itemsAdded"] == 24
    assert await api.items_at(a) == 0
    first = data["results"][0]
    assert (first["cardId"], first["printing"], first["action"]) == (
        "sv03-223", "Holofoil", "would add 2")
    assert {x["status"] for x in data["results"]} == {"matched", "skipped", "unmatched",
                                                       "error"}
    r = await import_(api, text, location=a, mode="sync", review="true")
    data = r.json()["data"]
    # sync counts Total + Add to Quantity (the Bulbasaur reverse: 3 + 1)
    assert r.status_code == 200 and data["itemsAdded"] == 27 and await api.items_at(a) == 27
    sent = [x for x in data["results"] if x["status"] == "unmatched"]
    assert len(sent) == 1 and sent[0]["captureId"]
    capture = await api.db.fetchrow("SELECT status, ocr_text FROM captures WHERE id = $1",
                                    sent[0]["captureId"])
    assert capture is not None and capture["status"] == "needs_review"
    assert "Fakemon" in capture["ocr_text"]
    queue = await api.get(f"/v1/captures/{sent[0]['captureId']}")
    assert queue.status_code == 200, queue.text
    assert queue.json()["data"]["reviewReasons"][0]["code"] == "import_unmatched"
    # an Idempotency-Key is bound to the streamed body: the retry replays, another body 422s
    key = {"Idempotency-Key": f"ix-{api.tag}"}
    again = (await api.c.post("/v1/inventory/import", content=text,
                              params={"location": a, "mode": "sync"},
                              headers={**api.headers["write"], "Content-Type": "text/csv",
                                       **key})).json()["data"]
    replay = await api.c.post("/v1/inventory/import", content=text,
                              params={"location": a, "mode": "sync"},
                              headers={**api.headers["write"], "Content-Type": "text/csv",
                                       **key})
    assert replay.status_code == 200 and replay.json()["data"] == again
    other = await api.c.post("/v1/inventory/import", content=text + "\n",
                             params={"location": a, "mode": "sync"},
                             headers={**api.headers["write"], "Content-Type": "text/csv",
                                      **key})
    assert other.status_code == 422
    assert (again["itemsAdded"], again["itemsRemoved"]) == (0, 0) and await api.items_at(a) == 27
    # the TCGplayer export carries the SKU ids learned, and imports back the same
    exported = await export(api, "tcgplayer", a)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert {r["TCGplayer Id"] for r in rows} >= {"5100001", "5100009"}
    r = await import_(api, exported.replace(a, b), location=b)
    assert r.json()["data"]["unmatched"] == 0 and await api.items_at(b) == 27


async def test_refusals_write_nothing(api: Api) -> None:
    loc = api.location("refused")
    r = await import_(api, "Name,Qty\nPineco,1\n", location=loc)
    assert r.status_code == 422 and problem_fields(r) == ["body.header"]
    assert (await import_(api, "", location=loc)).status_code == 422
    assert (await import_(api, b"\xff\xfe\x00", location=loc)).status_code == 400
    good = HEADER + "\n,Pokemon,Base Set,Charizard,,4/102,Holo Rare,Near Mint Holofoil,,,,,1,0,,\n"
    assert (await import_(api, good, format="excel", location=loc)).status_code == 400
    assert (await import_(api, good, mode="merge", location=loc)).status_code == 400
    assert (await import_(api, good, scope="read", location=loc)).status_code == 403
    assert (await api.get("/v1/inventory/export", format="pdf")).status_code == 400
    assert (await api.get("/v1/inventory/export", scope="none",
                          format="tcgplayer")).status_code == 401
    assert await api.items_at(loc) == 0
    # past the 5,000 rows of old, and no row fails the file
    many = HEADER + "\n" + ",Pokemon,X,Y,,1,C,Near Mint,,,,,1,0,,\n" * 6000
    r = await import_(api, many, location=loc)
    assert r.status_code == 200 and r.json()["data"]["unmatched"] == 6000
    template = await api.get("/v1/inventory/import/template", format="dragonshield")
    assert template.text.startswith('"sep=,"\r\nFolder Name,Quantity,')


async def test_cli_import_dry_run_and_export(api: Api, pg: TestCluster, tmp_path: Path
                                             ) -> None:
    a = api.location("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)

    def cardmint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cardmint", "inventory", *args],
                              capture_output=True, text=True, env=env, timeout=120)

    source = str(FIXTURES / "dragonshield.csv")
    done = await asyncio.to_thread(cardmint, "import", source, "--location", a, "--dry-run")
    assert done.returncode == 1, done.stderr  # one row is not a card we know
    assert "line 10: unmatched [set]" in done.stdout and "would add" in done.stdout
    assert await api.items_at(a) == 0
    done = await asyncio.to_thread(cardmint, "import", source, "--location", a, "--mode",
                                   "sync", "--actor", api.owner, "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["items_added"] == 9
    out = tmp_path / "ds.csv"
    done = await asyncio.to_thread(cardmint, "export", "--format", "dragonshield",
                                   "--location", a, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith('"sep=,"')
    done = await asyncio.to_thread(cardmint, "import", str(out), "--location", a, "--mode",
                                   "sync", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["items_unchanged"] == 9
    bad = tmp_path / "bad.csv"
    bad.write_text("Name,Qty\nX,1\n")
    done = await asyncio.to_thread(cardmint, "import", str(bad))
    assert done.returncode == 3 and "Traceback" not in done.stderr
    done = await asyncio.to_thread(cardmint, "import", "--help")
    assert "Folder Name" in done.stdout and "Portfolio Name" in done.stdout
