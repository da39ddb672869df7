"""The operations dashboard in a real browser (Debian's chromium through Playwright): a
replica stops and the page, refreshing itself, turns it red; it starts again and the page
turns it green. Screenshots: artifacts/screenshots/dashboard-ok.png and
dashboard-replica-down.png.

This module runs on a cluster of its own (its `pg` and `catalog` override the session's
for the fixtures of tests/browser.py), so stopping its replica disturbs no other test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from browser import chromium, screenshot, signed_in, web_server  # noqa: F401
from cardmint.cluster.pg import process
from cardmint.config import secret
from cardmint.db import Database, migrate
from cardmint.ops.monitor.sample import run_once
from support import TestCluster, start_cluster

pytestmark = pytest.mark.slow
WAIT_MS = 30_000  # a refresh every 2 s; the snapshot gives a stopped node up at once


@pytest.fixture(scope="module")
async def pg(work_root: Path, template_dir: Path) -> AsyncIterator[TestCluster]:
    """This module's own primary + replica, migrated; stopped by PID and deleted after."""
    tc = await start_cluster(work_root, template_dir, "web-dashboard")
    try:
        await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))
        yield tc
    finally:
        await tc.cluster.down(purge=True)


@pytest.fixture(scope="module")
async def catalog(pg: TestCluster) -> AsyncIterator[Database]:
    """The dashboard needs no card data: only a data layer to create the tokens with."""
    db = Database(pg.settings())
    await db.open(monitor=False)
    try:
        yield db
    finally:
        await db.close()


async def test_a_stopped_replica_turns_red_then_recovers(
        pg: TestCluster, signed_in, web_server) -> None:  # noqa: F811 (fixtures, by name)
    from playwright.async_api import expect

    # real monitor rounds, stamped a minute apart over the last ten, so the charts have lines
    now = datetime.now(UTC)
    for minutes in range(10, 0, -1):
        report = await run_once(pg.settings(), now=now - timedelta(minutes=minutes))
        assert report.stored, report.errors
    page = await signed_in("admin")
    await page.goto(f"{web_server.url}/dashboard?refresh=2")
    replica = page.locator('article.node[data-node="node2"]')
    overall = page.locator("#dash-overall")
    await expect(replica).to_have_attribute("data-status", "ok")
    await expect(replica.locator(".status-text")).to_contain_text("OK")
    await expect(page.locator('article.node[data-node="node1"]')).to_contain_text("primary")
    await expect(page.locator("#chart-latency-t")).to_have_count(1)
    await expect(page.locator('svg.chart g.series[data-series="p95"] polyline')).to_have_count(1)
    await screenshot(page, "dashboard-ok")
    # set on this document: still there after the panels change, so no reload did it
    await page.evaluate("window.cardmintLoaded = 'same document'")

    node = pg.cluster.state().replicas[0]
    pid = process.postmaster_pid(Path(node.datadir))
    assert pid is not None
    await process.stop(pid)
    try:
        await expect(replica).to_have_attribute("data-status", "critical", timeout=WAIT_MS)
        await expect(replica.locator(".status-text")).to_contain_text("CRITICAL")
        await expect(replica).to_contain_text("not running")
        await expect(overall).to_contain_text("CRITICAL")
        await expect(page.locator('tr[data-check="connectivity"][data-node="node2"]')
                     ).not_to_have_attribute("data-status", "ok")
        assert await page.evaluate("window.cardmintLoaded") == "same document"
        await expect(page.locator("#dash-refresh")).to_contain_text("Updated")
        await screenshot(page, "dashboard-replica-down")
    finally:
        await pg.cluster.up()  # starts the stopped node again (and waits for it to stream)

    await expect(replica).to_have_attribute("data-status", "ok", timeout=WAIT_MS)
    await expect(replica.locator(".status-text")).to_contain_text("OK")
    assert await page.evaluate("window.cardmintLoaded") == "same document"
