"""The web pages' test harness: a real `cardmint serve` on a free loopback port against the
session's cluster, Debian's chromium driven by Playwright (never a downloaded browser),
and pages already signed in through the real sign-in form.

Use it from a test module by importing the fixtures (pytest finds them by name):

    from browser import chromium, signed_in, web_server  # noqa: F401

    async def test_dashboard(signed_in, web_server):
        page = await signed_in("admin")          # a Playwright Page, signed in as admin
        await page.goto(web_server.url + "/dashboard")
        await screenshot(page, "dashboard")      # artifacts/screenshots/dashboard.png

`web_server` is module-scoped (one server process per test module, stopped by PID at
the end); `chromium` skips the module's tests with the reason when there is no chromium.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cardmint.catalog.identify import OcrInput
from cardmint.db import Database
from cardmint.intake import captures
from cardmint.intake.captures import NewCapture
from cardmint.intake.worker import Worker
from cardmint.tokens import create_token
from support import TestCluster, poll

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
# Root in a container: no sandbox (it needs user namespaces), no GPU, /dev/shm is small.
LAUNCH_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """Debian's chromium, if installed (`make browser` installs it)."""
    for candidate in (os.environ.get("CARDMINT_CHROMIUM"), *CHROMIUM_PATHS,
                      shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebServer:
    url: str
    pid: int
    log: Path


async def token(db: Database, scope: str, owner: str | None = None) -> str:
    """A new API token of `scope` (its owner is what the ledger records)."""
    secret, _ = await create_token(db, owner=owner or f"web-{scope}-{uuid.uuid4().hex[:6]}",
                                   scope=scope)
    return secret


async def in_review(db: Database, name: str = "Pikachu") -> dict[str, Any]:
    """A capture the real worker sent to review (a bare "Pikachu" matches many cards)."""
    new = NewCapture(image_ref=f"test://web/{uuid.uuid4().hex}", ocr=OcrInput(name=name),
                     priority=0)  # priority 0: ahead of whatever other tests left queued
    capture_id = (await captures.create(db, new, submitter="web-test"))["id"]
    worker = Worker(db, name="web-test-worker", listen=False)

    async def reviewed() -> dict[str, Any] | None:
        await worker.run_once(limit=1)
        c = await captures.get(db, capture_id)
        return c if c is not None and c["status"] == "needs_review" else None
    return await poll(reviewed, timeout=30)  # type: ignore[no-any-return]


async def screenshot(page: Any, name: str) -> Path:
    """The page as it is now, full length, under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
async def web_server(pg: TestCluster, catalog: Database,
                     work_root: Path) -> AsyncIterator[WebServer]:
    """`cardmint serve --no-worker` (the tests run the worker themselves, so no job other
    tests leave queued is taken by this server) on a free loopback port."""
    port = free_port()
    log = work_root / f"web-server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)
    with log.open("wb") as out:
        # cwd: the work root, so that no developer's .env in the checkout is read
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cardmint", "serve", "--host", "127.0.0.1", "--port",
            str(port), "--no-worker", "--no-monitor", cwd=work_root, env=env, stdout=out,
            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as client:
            async def ready() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"cardmint serve exited: {log.read_text()[-2000:]}")
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False
            await poll(ready, timeout=30, interval=0.1)
        yield WebServer(url, proc.pid, log)
    finally:
        if proc.returncode is None:
            proc.terminate()  # by PID: uvicorn finishes its requests and closes the pools
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    """A headless Debian chromium through Playwright; skips when there is none."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium: the browser tests need Debian's package `chromium` "
                    "(`make browser` installs it as root; Playwright's own download is "
                    "never used)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS,
                                          headless=True)
        try:
            yield browser
        finally:
            await browser.close()


SignedIn = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def signed_in(chromium: Any, web_server: WebServer,
                    catalog: Database) -> AsyncIterator[SignedIn]:
    """`await signed_in(scope)`: a new page in its own browser context, signed in through
    the sign-in form with a new token of that scope. Contexts are closed after the test."""
    contexts: list[Any] = []

    async def open_page(scope: str = "write") -> Any:
        context = await chromium.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        await page.goto(f"{web_server.url}/signin?next=/catalog")
        await page.get_by_label("Token").fill(await token(catalog, scope))
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{web_server.url}/catalog")
        return page

    try:
        yield open_page
    finally:
        for context in contexts:
            await context.close()
