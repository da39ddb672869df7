"""CSV export and import (TCGplayer and Collectr layouts) through the real app: export
then import round-trips, every bad row is reported with its line and reason while the
good rows are imported together, and refusals write nothing."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cardmint.db import Database
from cardmint.inventory import csvio
from inventory_helpers import Api, opened, problem_fields
from support import TestCluster

HEADER = ",".join(csvio.TCGPLAYER)


@pytest.fixture
async def api(pg: TestCluster, catalog: Database) -> AsyncIterator[Api]:
    async with opened(pg) as a:
        yield a


async def export(api: Api, fmt: str, location: str) -> str:
    r = await api.get("/v1/inventory/export", format=fmt, location=location)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return r.text


async def import_(api: Api, fmt: str, text: str | bytes, scope: str = "write",
                  **params: Any) -> httpx.Response:
    return await api.c.post("/v1/inventory/import", content=text,
                            params={"format": fmt, **params},
                            headers={**api.headers[scope], "Content-Type": "text/csv"})


async def stock(api: Api, loc: str) -> None:
    """A mixed collection: several printings, conditions, a language, a graded slab."""
    first = await api.variant("base1-4", "holo", "shadowless", ["1st-edition"])
    for body in (
        {"cardId": "sv01-001", "variantType": "normal"},
        {"cardId": "sv01-001", "variantType": "normal"},
        {"cardId": "sv01-001", "variantType": "reverse", "condition": "LP",
         "acquisitionCostCents": 35, "acquiredOn": "2024-12-24"},
        {"variantId": first, "acquisitionCostCents": 1_000_000_00},
        {"variantId": await api.variant("base1-58", "normal", size="jumbo"),
         "condition": "DMG"},
        {"variantId": await api.variant("base1-58", "normal", "shadowless-red-cheek",
                                        ["1st-edition"])},
        {"cardId": "swsh1-1", "variantType": "holo", "language": "ja"},
        {"cardId": "swsh1-1", "variantType": "holo", "gradingCompany": "PSA", "grade": 10},
    ):
        await api.add(location=loc, **body)


async def test_tcgplayer_round_trip(api: Api) -> None:
    a, b = api.location("a"), api.location("b")
    await stock(api, a)
    exported = await export(api, "tcgplayer", a)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert list(rows[0]) == list(csvio.TCGPLAYER)
    conditions = {(r["Product Name"], r["Condition"]): r["Total Quantity"] for r in rows}
    assert conditions[("Pineco", "Near Mint")] == "2"
    assert conditions[("Pineco", "Lightly Played Reverse Holofoil")] == "1"
    assert conditions[("Charizard", "Near Mint 1st Edition Holofoil (Shadowless)")] == "1"
    assert conditions[("Celebi V", "Near Mint Holofoil - Japanese")] == "1"
    assert len(rows) == 6  # the graded slab is not a TCGplayer listing
    assert rows[0]["Number"] in {"4/102", "001/198", "58/102", "1/202"}

    r = await import_(api, "tcgplayer", exported, location=b)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["errors"] == [] and data["importedRows"] == 6 and data["itemsCreated"] == 7
    assert await export(api, "tcgplayer", b) == exported
    ledger = await api.db.fetch(
        "SELECT event, actor, reason FROM inventory_ledger WHERE item_id = ANY($1::bigint[])",
        data["itemIds"])
    assert len(ledger) == 7 and {e["event"] for e in ledger} == {"acquired"}
    assert {e["actor"] for e in ledger} == {f"{api.owner}-write"}


async def test_collectr_round_trip(api: Api) -> None:
    a, b, c = api.location("a"), api.location("b"), api.location("c")
    await stock(api, a)
    exported = await export(api, "collectr", a)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert list(rows[0]) == list(csvio.COLLECTR)
    assert len(rows) == 7 and {r["Portfolio Name"] for r in rows} == {a}
    assert {r["Grade"] for r in rows} == {"Ungraded", "PSA 10"}
    reverse = next(r for r in rows if r["Variance"] == "Reverse Holofoil")
    assert (reverse["Card Condition"], reverse["Average Cost Paid"],
            reverse["Date Added"]) == ("Lightly Played", "0.35", "2024-12-24")

    r = await import_(api, "collectr", exported, location=b)
    assert r.status_code == 200 and r.json()["data"]["itemsCreated"] == 8, r.text
    assert await export(api, "collectr", b) == exported.replace(a, b)
    # without a location the portfolio names where the items go
    r = await import_(api, "collectr", exported.replace(a, c))
    assert r.status_code == 200 and await api.items_at(c) == 8


async def test_import_reports_bad_rows_and_imports_good_ones(api: Api) -> None:
    loc = api.location("mixed")
    text = "\r\n".join([
        HEADER,
        ",Pokemon,Scarlet & Violet,Pineco,,001/198,Common,Near Mint,,,,,2,0,,",  # 2 ok
        ",Pokemon,No Such Set,Pineco,,001/198,Common,Near Mint,,,,,1,0,,",       # 3
        ",Pokemon,Scarlet & Violet,Pineco,,,Common,Near Mint,,,,,1,0,,",         # 4
        ",Pokemon,Scarlet & Violet,Pineco,,001/198,Common,Mint,,,,,1,0,,",       # 5
        ",Pokemon,Scarlet & Violet,Pineco,,001/198,Common,Near Mint,,,,,-1,0,,",  # 6
        ",Pokemon,Scarlet & Violet,Pineco,,001/198,Common,Near Mint Holofoil,,,,,1,0,,",  # 7
        ",Pokemon,Scarlet & Violet,Pikachu,,001/198,Common,Near Mint,,,,,1,0,,",  # 8
        ",Pokemon,Base Set,Charizard,,4/102,Holo Rare,Near Mint Holofoil,,,,,1,0,,",  # 9
        ',Pokemon,Base Set,Charizard,"two\nlines",4/102,Holo Rare,'
        'Lightly Played Holofoil (Unlimited),,,,,0,3,,',                           # 10-11 ok
        ",Pokemon,Scarlet & Violet,Pineco,,001/198,Common,Near Mint - Klingon1,,,,,1,0,,",
        ",Pokemon,Base Set,Charizard,,4/102,Holo Rare,Near Mint Holofoil (Unlimited),,,,,0,0,,",
    ]) + "\r\n"
    r = await import_(api, "tcgplayer", text, location=loc)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["rows"] == 11 and data["importedRows"] == 2 and data["itemsCreated"] == 5
    assert [(e["line"], e["field"]) for e in data["errors"]] == [
        (3, "Number"), (4, "Number"), (5, "Condition"), (6, "Total Quantity"),
        (7, "Condition"), (8, "Product Name"), (9, "Condition"), (12, "Condition")]
    assert await api.items_at(loc) == 5
    ledger = await api.db.fetchval(
        "SELECT count(*) FROM inventory_ledger WHERE item_id = ANY($1::bigint[])",
        data["itemIds"])
    assert ledger == 5


async def test_import_refusals_write_nothing(api: Api) -> None:
    loc = api.location("refused")
    bad = HEADER + "\n,Pokemon,Nowhere,Pineco,,1/1,Common,Near Mint,,,,,1,0,,\n"
    r = await import_(api, "tcgplayer", bad, location=loc)
    assert r.status_code == 422 and problem_fields(r) == ["body.line[2].Number"]
    r = await import_(api, "tcgplayer", "Name,Qty\nPineco,1\n", location=loc)
    assert r.status_code == 422 and problem_fields(r) == ["body.header"]
    assert (await import_(api, "tcgplayer", "", location=loc)).status_code == 422
    assert (await import_(api, "tcgplayer", b"\xff\xfe\x00", location=loc)).status_code == 400
    assert (await import_(api, "excel", bad, location=loc)).status_code == 400
    good = HEADER + "\n,Pokemon,Scarlet & Violet,Pineco,,001/198,Common,Near Mint,,,,,1,0,,\n"
    assert (await import_(api, "tcgplayer", good, scope="read",
                          location=loc)).status_code == 403
    big = HEADER + "\n" + ",Pokemon,X,Y,,1,C,Near Mint,,,,,1,0,,\n" * 40_000
    assert (await import_(api, "tcgplayer", big, location=loc)).status_code == 413
    many = HEADER + "\n" + ",Pokemon,X,Y,,1,C,Near Mint,,,,,1,0,,\n" * 5001
    r = await import_(api, "tcgplayer", many, location=loc)
    assert r.status_code == 422 and problem_fields(r) == ["body"]
    assert (await api.get("/v1/inventory/export", format="pdf")).status_code == 400
    assert (await api.get("/v1/inventory/export", scope="none",
                          format="tcgplayer")).status_code == 401
    assert await api.items_at(loc) == 0


def test_printing_labels_are_unique_per_card() -> None:
    def v(type_: str, subtype: str | None = None, stamps: list[str] | None = None,
          size: str | None = None, foil: str | None = None) -> dict[str, Any]:
        return {"type": type_, "subtype": subtype, "stamps": stamps or [], "size": size,
                "foil": foil}

    assert csvio.printing(v("normal")) == "Normal"
    assert csvio.printing(v("reverse", foil="pokeball")) == "Reverse Holofoil (Pokeball)"
    assert csvio.printing(v("holo", "shadowless", ["1st-edition"])) == \
        "1st Edition Holofoil (Shadowless)"
    assert csvio.printing(v("normal", size="jumbo")) == "Normal (Jumbo)"
    variants = [v("holo"), v("holo", foil="cosmos"), v("reverse")]
    assert csvio.pick_printing(variants, "holofoil") is variants[0]
    assert csvio.pick_printing(variants, "Holofoil (Cosmos)") is variants[1]
    assert csvio.parse_condition("Heavily Played Reverse Holofoil - Japanese", "c") == (
        "HP", "ja", "Reverse Holofoil")
    assert csvio.condition_text("LP", "fr", "Holofoil") == "Lightly Played Holofoil - French"


async def test_cli_export_then_import(api: Api, pg: TestCluster, tmp_path: Any) -> None:
    import asyncio
    import json
    import os
    import subprocess
    import sys

    a, b = api.location("cli-a"), api.location("cli-b")
    await api.add(cardId="sv01-001", variantType="reverse", location=a)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)

    def cardmint(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cardmint", "inventory", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    out = tmp_path / "stock.csv"
    done = await asyncio.to_thread(cardmint, "export", "--format", "collectr",
                                   "--location", a, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().decode() == await export(api, "collectr", a)
    done = await asyncio.to_thread(cardmint, "import", str(out), "--format", "collectr",
                                   "--location", b, "--actor", api.owner, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["items_created"] == 1
    assert await export(api, "collectr", b) == out.read_bytes().decode().replace(a, b)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n,Pokemon,Nowhere,X,,1,C,Near Mint,,,,,1,0,,\n")
    done = await asyncio.to_thread(cardmint, "import", str(bad), "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = await asyncio.to_thread(cardmint, "import", str(out), "--format", "xls")
    assert done.returncode == 3
