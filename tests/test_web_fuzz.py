"""Property tests of the web pages (issue 15, item 3): whatever a browser or a script sends
to any page (every query parameter a page reads, every field of every form, any path
value), signed in or not, the answer is never a 5xx and nothing is logged as an error or
a traceback. Pages, parameters and fields are found, not listed: a page added later is
fuzzed too.

The in-process app (httpx) raises any unhandled exception straight into the test. A
cluster of its own with the sample catalog: random writes must not touch other tests'."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardmint import tokens, web
from cardmint.api.app import create_app
from cardmint.web import forms
from support import TestCluster, migrated_cluster, serving

WEB = Path(__file__).resolve().parent.parent / "src" / "cardmint" / "web"
EXAMPLES = 30  # per route and client: ~2,000 requests, ~20 s on this machine
HTML = {"accept": "text/html"}

# Values that broke pages before, and values pages expect, so both paths are walked.
NASTY = ["²", "٣", "１２", "1e30", "1E2", "-1", "0", "1", "2", "10000", "10001",
         "99999999999999999999", "\x00", "a\x00b", "\u202eevil", "\r\n", "%", "%00", "'",
         "\"", "<script>", "a" * 300, "", " ", "NM", "MINT", "IN_STOCK", "yes", "maybe",
         "base1-4", "base1-4 hp:[100 TO", "(" * 50, "USD", "admin", "write", "/catalog",
         "//evil.example", "https://evil.example/", "true", "12.34", "$1,234.50", "2024-01-31",
         "0001-01-01", "9999-12-31", "\ud800", "move", "sell", "reserve"]
VALUES = st.one_of(st.sampled_from(NASTY), st.text(max_size=40),
                   st.integers(-(10**20), 10**20).map(str))


def _names_read_in_source() -> set[str]:
    """Every parameter or field name a page module reads: `query_params.get("x")`,
    `params.get("x")`, `form.get("x")`, `opt("x")`, and `name="x"` in the templates."""
    names: set[str] = set()
    for path in WEB.glob("*.py"):
        names |= set(re.findall(r"""(?:params|form)\.get\(\s*"(\w+)\"""", path.read_text()))
        names |= set(re.findall(r"""\bopt\(\s*"(\w+)\"""", path.read_text()))
    for path in (WEB / "templates").glob("*.html"):
        names |= set(re.findall(r'\bname="(\w+)"', path.read_text()))
    return names - {"viewport"}


def _routes() -> list[APIRoute]:
    """Each route of each module of cardmint.web with a `router`, as `web.mount` finds them."""
    found = []
    for info in pkgutil.iter_modules(web.__path__):
        router = getattr(importlib.import_module(f"cardmint.web.{info.name}"), "router", None)
        found += [r for r in (router.routes if router else []) if isinstance(r, APIRoute)]
    return found


def page_routes() -> list[tuple[str, str]]:
    """(method, path) of every page."""
    return sorted((method, r.path) for r in _routes() for method in r.methods)


def for_scripts() -> set[str]:
    """Paths the pages' own scripts read as JSON (the scan page follows its photos): their
    refusals may be JSON too. Found by the handler's declared return type."""
    return {r.path for r in _routes()
            if "JSONResponse" in str(r.endpoint.__annotations__.get("return", ""))}


SCRIPTS = for_scripts()

# what the pages read, plus what their routes declare (`refresh`, `next`, `needs`)
NAMES = sorted(_names_read_in_source()
               | {p.alias for r in _routes() for p in r.dependant.query_params})




def fill(path: str, values: dict[str, str]) -> str:
    """The path with its `{holes}` filled, each value %-encoded as UTF-8 (a lone surrogate
    cannot be: it travels as its replacement)."""
    def one(m: re.Match[str]) -> str:
        value = values.get(m.group(1), "x").encode("utf-8", "replace")
        return quote(value, safe="") or "x"

    return re.sub(r"\{(\w+)\}", one, path)


@pytest.fixture(scope="module")
async def fuzz_cluster(work_root: Path, template_dir: Path) -> AsyncIterator[TestCluster]:
    async with migrated_cluster(work_root, template_dir, "webfuzz", replicas=0,
                                sample=True) as tc:
        yield tc


@pytest.fixture
async def clients(fuzz_cluster: TestCluster
                  ) -> AsyncIterator[tuple[FastAPI, dict[str, httpx.AsyncClient], str]]:
    app = create_app(fuzz_cluster.settings())
    async with serving(app) as anonymous:
        anonymous.base_url = httpx.URL("http://127.0.0.1")
        anonymous.headers.update(HTML)
        secret, _ = await tokens.create_token(app.state.db, owner="web-fuzz", scope="admin")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers=HTML) as signed:
            r = await signed.post("/signin", data={"token": secret})
            assert r.status_code == 303
            page = await signed.get("/inventory")
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
            assert csrf
            yield app, {"anonymous": anonymous, "signed in": signed}, csrf.group(1)


def test_every_page_and_form_field_is_found() -> None:
    """The fuzz reaches what the pages read: a new page or field needs no edit here."""
    methods = set(page_routes())
    assert {("GET", "/catalog"), ("GET", "/inventory"), ("GET", "/inventory/items/{raw_id}"),
            ("GET", "/review"), ("GET", "/dashboard"), ("POST", "/signin"),
            ("POST", "/inventory/add"), ("POST", "/review/{raw_id}/resolve"),
            ("POST", "/inventory/items/{raw_id}/{action}")} <= methods
    assert {"page", "q", "sort", "set", "condition", "status", "location", "graded",
            "resolved", "item", "done", "next", "needs", "card", "token", "csrf", "version",
            "variantId", "cardId", "acquisitionCost", "amount", "acquiredOn", "grade",
            "gradingCompany", "certNumber", "reason", "language"} <= set(NAMES)


async def test_no_page_answers_5xx_whatever_it_is_sent(
        clients: tuple[FastAPI, dict[str, httpx.AsyncClient], str],
        caplog: pytest.LogCaptureFixture) -> None:
    _, by_who, csrf = clients
    caplog.set_level(logging.WARNING)
    seen: dict[int, int] = {}
    for who, client in by_who.items():
        for method, path in page_routes():
            await _fuzz_route(client, method, path, csrf if who == "signed in" else "", seen)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage()[:300] for r in errors]
    assert not any(status >= 500 for status in seen), seen
    assert seen.get(200) and seen.get(400) and seen.get(303)  # every path walked


async def _fuzz_route(client: httpx.AsyncClient, method: str, path: str, csrf: str,
                      seen: dict[int, int]) -> None:
    holes = re.findall(r"\{(\w+)\}", path)
    requests: list[tuple[str, dict[str, Any]]] = []

    @given(path_values=st.fixed_dictionaries({h: VALUES for h in holes}),
           params=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=6),
           with_csrf=st.booleans())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def cases(path_values: dict[str, str], params: dict[str, str], with_csrf: bool) -> None:
        data = {**params, **({"csrf": csrf} if with_csrf and csrf else {})}
        requests.append((fill(path, path_values), data))

    cases()  # hypothesis draws the cases; the requests are sent from the event loop
    for url, data in requests:
        if method == "GET":
            r = await client.get(url, params=_encodable(data))
        else:
            r = await client.post(url, data=_encodable(data))
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (method, url, data, r.text[:500])
        if r.status_code >= 400 and path not in SCRIPTS:
            assert r.headers["content-type"].startswith("text/html"), (method, url)


def _encodable(data: dict[str, str]) -> dict[str, str]:
    """httpx encodes as UTF-8: a lone surrogate cannot travel; send its replacement."""
    return {k: v.encode("utf-8", "replace").decode() for k, v in data.items()}


async def test_forms_with_too_many_fields_are_refused(
        clients: tuple[FastAPI, dict[str, httpx.AsyncClient], str]) -> None:
    """`POST /signin` with 201 fields was a 500 (parse_qsl's ValueError)."""
    _, by_who, _ = clients
    many = "&".join(f"f{i}=x" for i in range(201)).encode()
    for path in ("/signin", "/inventory/add", "/inventory/items/1/move"):
        r = await by_who["signed in"].post(path, content=many, headers={
            "content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400, (path, r.status_code)
        assert f"more than {forms.MAX_FIELDS} fields" in r.text


async def test_what_the_review_sent_is_a_4xx_page(
        clients: tuple[FastAPI, dict[str, httpx.AsyncClient], str]) -> None:
    """The 500s the review reproduced, one by one."""
    _, by_who, csrf = clients
    anonymous, signed = by_who["anonymous"], by_who["signed in"]
    r = await anonymous.get("/catalog?page=%C2%B2")
    assert r.status_code == 400 and "whole number" in r.text
    for url, status in (("/inventory?page=²", 400), ("/inventory/items/²", 404),
                        ("/review?page=²", 400), ("/review?resolved=²", 200),  # no notice
                        ("/inventory?page=٣", 400), ("/inventory/items/٣", 404)):
        r = await signed.get(url)
        assert r.status_code == status, (url, r.status_code)
    page = await signed.get("/inventory/add?card=base1-4")
    variant = re.search(r'<option value="(\d+)"', page.text)
    assert variant
    add = {"csrf": csrf, "cardId": "base1-4", "variantId": variant.group(1),
           "condition": "NM", "language": "en"}
    for field, value in (("variantId", "²"), ("variantId", "٣"), ("acquisitionCost", "1e30"),
                         ("acquisitionCost", "1E+30"), ("acquiredOn", "0001-01-01"),
                         ("acquiredOn", "9999-12-31")):
        r = await signed.post("/inventory/add", data={**add, field: value})
        assert r.status_code == 422 and f'id="e-{field}"' in r.text, (field, r.status_code)
    for field, value in (("location", "Box\r\nA"), ("location", "Box\u202eA")):
        r = await signed.post("/inventory/add", data={**add, field: value})
        assert r.status_code == 400 and "Nothing was changed" in r.text, (field, r.status_code)
    r = await signed.post("/inventory/add", data=add)
    assert r.status_code == 303
    item = r.headers["location"].split("/")[-1].split("?")[0]
    r = await signed.post(f"/inventory/items/{item}/sell",
                          data={"csrf": csrf, "version": "²", "amount": "5"})
    assert r.status_code == 400 and "which version" in r.text
    r = await signed.post(f"/inventory/items/{item}/sell",
                          data={"csrf": csrf, "version": "1", "amount": "1e30"})
    assert r.status_code == 422 and 'id="e-amount"' in r.text
