"""`cardmint loadtest app` with its writes (captures, inventory updates), against a real
`cardmint serve` on a cluster of its own: the writes leave captures in the queue and move
inventory items, which the session cluster's other tests must not see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cardmint import tokens
from cardmint.api.app import create_app
from cardmint.db import Database
from cardmint.ops.loadtest import wrk
from cardmint.ops.loadtest.app import AppOptions, run_app_loadtest
from support import TestCluster, migrated_cluster, serving

ITEMS = 6
needs_wrk = pytest.mark.skipif(wrk.available() is None,
                               reason="wrk is not installed (Debian: apt-get install wrk)")


@pytest.fixture(scope="module")
async def stocked(work_root: Path, template_dir: Path) -> AsyncIterator[TestCluster]:
    """A cluster with the sample catalog and a few inventory items in stock."""
    async with migrated_cluster(work_root, template_dir, "loadmix", replicas=0,
                                sample=True) as tc:
        app = create_app(tc.settings())
        async with serving(app) as client:
            token, _ = await tokens.create_token(app.state.db, owner="stock", scope="write")
            variants = [r["id"] for r in await app.state.db.fetch(
                "SELECT id FROM card_variants ORDER BY id LIMIT $1", ITEMS)]
            for variant in variants:
                r = await client.post("/v1/inventory/items", json={"variantId": variant,
                                                                   "location": "shelf"},
                                      headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 201, r.text
        yield tc


async def _counts(tc: TestCluster) -> tuple[int, int, int]:
    """Captures, inventory moves in the ledger, items away from their shelf."""
    db = await Database(tc.settings()).open(monitor=False)
    try:
        return (await db.fetchval("SELECT count(*) FROM captures"),
                await db.fetchval("SELECT count(*) FROM inventory_ledger WHERE event = 'moved'"),
                await db.fetchval("SELECT count(*) FROM inventory_items "
                                  "WHERE location LIKE 'loadtest-%'"))
    finally:
        await db.close()


async def test_the_mix_finds_and_updates_inventory_items(stocked: TestCluster) -> None:
    """The inventory operation lists the items (it asked a route that needs a token without
    one, so it was skipped: "no inventory items to update") and updates them, each PATCH
    naming its item's current version (the API refuses `If-Match: *`)."""
    opts = AppOptions(duration_s=1, concurrency=2, warmup_s=0, mix="inventory=1",
                      compare_wrk=False, workers=1, generator="httpx")
    report = await run_app_loadtest(stocked.settings(), opts)
    assert report["skipped"] == {} and report["generator"]["name"] == "httpx"
    inventory = report["operations"]["inventory"]
    assert inventory["requests"] > 0 and inventory["errors"] == 0, inventory["error_kinds"]


@needs_wrk
async def test_wrk_drives_the_whole_mix_with_its_writes(stocked: TestCluster) -> None:
    captures, moves, _ = await _counts(stocked)
    opts = AppOptions(duration_s=2, concurrency=4, warmup_s=1, compare_wrk=False, workers=1)
    report = await run_app_loadtest(stocked.settings(), opts)
    assert report["generator"]["name"] == "wrk" and report["generator"]["why"] is None
    assert report["skipped"] == {}
    assert set(report["mix"]) == {"search", "lookup", "identify", "capture", "inventory"}
    total = report["total"]
    assert total["requests"] > 0 and total["errors"] == 0, (total, report["generator"])
    assert total["p50_ms"] <= total["p95_ms"] <= total["p99_ms"] <= total["max_ms"]
    assert set(report["generator"]["statuses"]) == {"200", "201"}  # 201: the captures
    assert report["operations"] == {}  # wrk measures the mix as a whole
    assert [t["what"] for t in report["targets"]] == ["mix", "lookup", "search"]
    assert [t["met"] for t in report["targets"]][1:] == [None, None]
    # the writes happened: captures queued, items moved (each move a ledger row)
    after = await _counts(stocked)
    assert after[0] > captures and after[1] > moves and after[2] > 0
