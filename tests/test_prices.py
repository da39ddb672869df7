"""Prices through the real app: the bulk feed (each bad row reported by index, the good
ones written together, replays are no-ops), its bounds and scopes, and a card's history
with the latest price per printing and condition (anonymous)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cardmint.db import Database
from inventory_helpers import Api, opened, problem_fields
from support import TestCluster


@pytest.fixture
async def api(pg: TestCluster, catalog: Database) -> AsyncIterator[Api]:
    async with opened(pg) as a:
        yield a


def row(**fields: Any) -> dict[str, Any]:
    return {"condition": "NM", "priceCents": 100, "observedAt": "2025-03-01T12:00:00Z",
            **fields}


async def stored(api: Api, source: str) -> int:
    return await api.db.fetchval("SELECT count(*) FROM prices WHERE source = $1", source)


async def test_feed_stores_good_rows_and_reports_bad_ones(api: Api) -> None:
    source = f"feed-{api.tag}"
    reverse = await api.variant("sv01-001", "reverse")
    rows = [
        row(variantId=reverse, priceCents=25),                                     # 0 ok
        row(cardId="sv01-001", variantType="normal", condition="LP", priceCents=10),  # 1 ok
        row(cardId="base1-4", variantType="holo", variantSubtype="shadowless",
            variantStamps=["1st-edition"], priceCents=35_000_00),                  # 2 ok
        row(cardId="nope-1", variantType="holo"),                                  # 3
        row(variantId=2**62),                                                      # 4
        row(variantId=reverse, condition="MINT"),                                  # 5
        row(variantId=reverse, priceCents=-1),                                     # 6
        row(variantId=reverse, priceCents=1.5),                                    # 7
        row(variantId=reverse, observedAt="yesterday"),                            # 8
        row(variantId=reverse, observedAt="2025-03-01T12:00:00"),                  # 9 naive
        row(cardId="base1-4", variantType="holo"),                                 # 10 ambiguous
        row(cardId="sv01-001", variantId=await api.variant("swsh1-1", "holo")),    # 11
        "not an object",                                                           # 12
        row(variantId=reverse, colour="red"),                                      # 13
        row(variantId=reverse, currency="usd"),                                    # 14
        {"variantId": reverse, "observedAt": "2025-03-01T12:00:00Z"},              # 15
    ]
    r = await api.post("/v1/prices", {"source": source, "rows": rows})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["received"], data["inserted"], data["duplicates"], data["rejected"]) == (
        16, 3, 0, 13)
    assert [e["index"] for e in data["errors"]] == list(range(3, 16))
    fields = {e["index"]: e["field"] for e in data["errors"]}
    assert fields[3] == "body.rows[3].cardId" and fields[4] == "body.rows[4].variantId"
    assert fields[5].endswith(".condition") and fields[6].endswith(".priceCents")
    assert fields[7].endswith(".priceCents") and fields[8].endswith(".observedAt")
    assert fields[9].endswith(".observedAt") and fields[10].endswith(".variantType")
    assert fields[11].endswith(".variantId") and fields[13].endswith(".colour")
    assert fields[14].endswith(".currency") and fields[15].endswith(".priceCents")
    assert await stored(api, source) == 3

    again = await api.post("/v1/prices", {"source": source, "rows": rows[:3]})
    assert again.json()["data"]["inserted"] == 0
    assert again.json()["data"]["duplicates"] == 3
    assert await stored(api, source) == 3


async def test_feed_refusals_write_nothing(api: Api) -> None:
    source = f"bad-{api.tag}"
    everything_bad = await api.post("/v1/prices", {"source": source, "rows": [
        row(cardId="nope-1", variantType="holo"), row(variantId=1, priceCents=-5)]})
    assert everything_bad.status_code == 422
    assert problem_fields(everything_bad) == ["body.rows[0].cardId", "body.rows[1].priceCents"]
    too_many = await api.post("/v1/prices", {"source": source,
                                             "rows": [row(variantId=1)] * 5001})
    assert too_many.status_code in (400, 413)
    assert (await api.post("/v1/prices", {"source": source, "rows": []})).status_code == 400
    assert (await api.post("/v1/prices", {"rows": [row(variantId=1)]})).status_code == 422
    variant = await api.variant("swsh1-1", "holo")
    body = {"source": source, "rows": [row(variantId=variant)]}
    assert (await api.post("/v1/prices", body, scope="read")).status_code == 403
    assert (await api.post("/v1/prices", body, scope="none")).status_code == 401
    assert await stored(api, source) == 0


async def test_feed_of_five_thousand_rows(api: Api) -> None:
    source = f"bulk-{api.tag}"
    variant = await api.variant("swsh1-1", "holo")
    rows = [{"variantId": variant, "priceCents": i, "condition": "HP",
             "observedAt": f"2020-01-01T00:00:{i % 60:02d}.{i:06d}Z"} for i in range(5000)]
    r = await api.post("/v1/prices", {"source": source, "rows": rows},
                       headers={"Idempotency-Key": f"bulk-{api.tag}"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["inserted"] == 5000
    assert await stored(api, source) == 5000


async def test_card_history_and_latest(api: Api) -> None:
    source = f"hist-{api.tag}"
    normal = await api.variant("sv01-001", "normal")
    reverse = await api.variant("sv01-001", "reverse")
    # recent, so the latest of all sources, and past: a future observation is refused
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    at = {n: (day - timedelta(days=n)).isoformat() for n in (1, 16, 31)}
    await api.post("/v1/prices", {"source": source, "rows": [
        row(variantId=normal, priceCents=10, observedAt=at[31]),
        row(variantId=normal, priceCents=12, observedAt=at[1]),
        row(variantId=normal, priceCents=4, condition="HP", observedAt=at[1]),
        row(variantId=reverse, priceCents=30, observedAt=at[16])]})
    r = await api.get("/v1/cards/sv01-001/prices", scope="none", source=source)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["priceCents"] for p in body["data"]] == [4, 12, 30, 10]  # ties: newest row first
    assert body["data"][0]["observedAt"] == at[1]  # isoformat ("+00:00"), not "Z"
    assert body["totalCount"] == 4 and body["count"] == 4
    latest = {(p["variantId"], p["condition"]): p["priceCents"] for p in body["latest"]}
    assert latest[(normal, "NM")] == 12 and latest[(normal, "HP")] == 4
    assert latest[(reverse, "NM")] == 30
    only = await api.get("/v1/cards/sv01-001/prices", scope="none", source=source,
                         variantId=normal, condition="NM", pageSize=1, page=2)
    assert [p["priceCents"] for p in only.json()["data"]] == [10]
    assert only.json()["totalCount"] == 2
    assert (await api.get("/v1/cards/nope-1/prices", scope="none")).status_code == 404
    for params in ({"condition": "MINT"}, {"pageSize": 0}, {"variantId": "x"}):
        assert (await api.get("/v1/cards/sv01-001/prices", scope="none",
                              **params)).status_code == 400


async def test_an_ambiguous_printing_is_refused_with_the_choices(api: Api) -> None:
    """A feed's "normal" for base1-58 (Pikachu) once went to the jumbo printing; now it
    is refused, naming every standard-size choice in full; variantSize picks the jumbo."""
    source = f"jumbo-{api.tag}"
    jumbo = await api.variant("base1-58", "normal", size="jumbo")
    r = await api.post("/v1/prices", {"source": source, "rows": [
        row(cardId="base1-58", variantType="normal"),
        row(cardId="base1-58", variantType="normal", variantSize="jumbo", priceCents=7)]})
    data = r.json()["data"]
    assert (data["inserted"], data["rejected"]) == (1, 1), r.text
    message = data["errors"][0]["message"]
    assert data["errors"][0]["field"] == "body.rows[0].variantType"
    assert "Normal · Shadowless · 1st Edition" in message and "none was chosen" in message
    assert "Jumbo" not in message  # a size-less row means a standard card
    assert await api.db.fetchval(
        "SELECT variant_id FROM prices WHERE source = $1", source) == jumbo
