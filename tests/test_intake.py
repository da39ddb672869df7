"""The intake API through the real app on the real cluster: POST /v1/captures, GET
/v1/captures/{id}, GET /v1/review, POST /v1/captures/{id}/resolve, each with its bad inputs
(a 4xx naming the field, nothing written), idempotent retries, and `serve`'s in-process
worker taking a capture all the way to an inventory item."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cardmint import tokens
from cardmint.api.app import create_app
from cardmint.api.intake import run_worker_in
from cardmint.db import Database
from cardmint.intake import captures
from cardmint.intake.worker import Worker
from support import TestCluster, poll, serving

CHARIZARD = {"name": "Charizard", "number": "4/102", "setCode": "base1", "hp": 120}
UNKNOWN = {"name": "Qwxzvjjk Pqqvwxz"}


class Api:
    def __init__(self, client: httpx.AsyncClient, db: Database) -> None:
        self.c, self.db = client, db
        self.owner = f"intake-test-{uuid.uuid4().hex[:8]}"
        self.headers: dict[str, dict[str, str]] = {}
        self.worker = Worker(db, name="intake-test", listen=False)

    async def login(self) -> None:
        for scope in ("read", "write"):
            token, _ = await tokens.create_token(self.db, owner=f"{self.owner}-{scope}",
                                                 scope=scope)
            self.headers[scope] = {"Authorization": f"Bearer {token}"}

    def body(self, **overrides: Any) -> dict[str, Any]:
        return {"imageRef": f"s3://scans/{uuid.uuid4().hex}.jpg", "ocr": CHARIZARD,
                "priority": 0, **overrides}

    async def post(self, body: dict[str, Any], scope: str = "write",
                   **headers: str) -> httpx.Response:
        return await self.c.post("/v1/captures", json=body,
                                 headers={**self.headers.get(scope, {}), **headers})

    async def get(self, path: str, scope: str = "read", **params: Any) -> httpx.Response:
        return await self.c.get(path, params=params, headers=self.headers.get(scope, {}))

    async def resolve(self, capture_id: int | str, body: dict[str, Any], scope: str = "write",
                      **headers: str) -> httpx.Response:
        return await self.c.post(f"/v1/captures/{capture_id}/resolve", json=body,
                                 headers={**self.headers.get(scope, {}), **headers})

    async def in_review(self, ocr: dict[str, Any] = UNKNOWN) -> dict[str, Any]:
        """A capture the worker sent to review."""
        created = (await self.post(self.body(ocr=ocr))).json()["data"]

        async def reviewed() -> dict[str, Any] | None:
            await self.worker.run_once(limit=1)
            c = await captures.get(self.db, created["id"])
            return c if c["status"] == "needs_review" else None
        await poll(reviewed, timeout=30)
        return (await self.get(f"/v1/captures/{created['id']}")).json()["data"]

    async def captures_of(self, image_ref: str) -> int:
        return await self.db.fetchval("SELECT count(*) FROM captures WHERE image_ref = $1",
                                      image_ref)


@pytest.fixture
async def api(pg: TestCluster, catalog: Database) -> AsyncIterator[Api]:
    app = create_app(pg.settings())
    async with serving(app) as client:
        a = Api(client, app.state.db)
        await a.login()
        yield a
        await a.db.execute("DELETE FROM api_tokens WHERE owner LIKE $1", f"{a.owner}%")


def problem_field(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert body["status"] == response.status_code and body["title"] and body["detail"]
    return [e["field"] for e in body["errors"]]


# -- POST /v1/captures -----------------------------------------------------------------------

async def test_a_capture_is_created_queued_with_its_job(api: Api) -> None:
    body = api.body(ocrText="Charizard\nFire Spin", location="box-3",
                    variant={"subtype": "unlimited"}, condition="LP",
                    metadata={"scanner": "s-1", "dpi": 600, "batch": None})
    created = await api.post(body)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert created.headers["location"] == f"/v1/captures/{data['id']}"
    assert data["status"] == "queued" and data["submittedBy"] == f"{api.owner}-write"
    assert data["ocr"] == CHARIZARD and data["ocrText"] == "Charizard\nFire Spin"
    assert data["metadata"] == {"scanner": "s-1", "dpi": 600, "batch": None}
    assert (data["condition"], data["language"], data["location"]) == ("LP", "en", "box-3")
    assert data["job"]["status"] == "queued" and data["job"]["attempts"] == 0
    again = await api.get(created.headers["location"])
    assert again.status_code == 200 and again.json()["data"]["id"] == data["id"]


async def test_writes_need_the_write_scope(api: Api) -> None:
    body = api.body()
    assert (await api.post(body, scope="none")).status_code == 401
    assert (await api.post(body, scope="read")).status_code == 403
    assert await api.captures_of(body["imageRef"]) == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"imageRef": None}, "body.imageRef"),
    ({"imageRef": ""}, "body.imageRef"),
    ({"imageRef": "has spaces.jpg"}, "body.imageRef"),
    ({"imageRef": "x" * 2049}, "body.imageRef"),
    ({"ocrText": "x" * 4001}, "body.ocrText"),
    ({"ocr": {"name": "x" * 101}}, "body.ocr.name"),
    ({"ocr": {"hp": 100_000}}, "body.ocr.hp"),
    ({"ocr": {"hp": "123456789"}}, "body.ocr.hp"),
    ({"ocr": {"hp": True}}, "body.ocr.hp"),
    ({"ocr": {"colour": "red"}}, "body.ocr.colour"),
    ({"condition": "MINT"}, "body.condition"),
    ({"language": "english"}, "body.language"),
    ({"location": ""}, "body.location"),
    ({"priority": -1}, "body.priority"),
    ({"priority": 1001}, "body.priority"),
    ({"variant": {"stamps": ["x" * 65]}}, "body.variant.stamps"),
    ({"variant": {"stamps": ["a"] * 9}}, "body.variant.stamps"),
    ({"metadata": {f"k{i}": i for i in range(33)}}, "body.metadata"),
    ({"metadata": {"nested": {"a": 1}}}, "body.metadata.nested"),
    ({"metadata": {"note": "x" * 501}}, "body.metadata"),
    ({"metadata": {"": 1}}, "body.metadata"),
    ({"extra": 1}, "body.extra"),
    ({"imageRef": "s3://a\u0000b"}, "body.imageRef"),
    ({"ocrText": "Charizard \ud800"}, "body.ocrText"),
    ({"metadata": {"k": "a\u0000"}}, "body.metadata"),
    ({"metadata": {"k": float("nan")}}, "body.metadata.k"),
])
async def test_bad_captures_are_400s_naming_the_field_and_write_nothing(
        api: Api, change: dict[str, Any], field: str) -> None:
    body = api.body(**change)
    if body["imageRef"] is None:
        del body["imageRef"]
    before = await api.db.fetchval("SELECT count(*) FROM captures")
    response = await api.c.post("/v1/captures", headers={**api.headers["write"],
                                                         "Content-Type": "application/json"},
                                content=json.dumps(body).encode())  # NaN as JSON allows it
    assert response.status_code == 400, response.text
    assert any(f == field or f.startswith(field + ".") for f in problem_field(response)), \
        response.json()
    assert await api.db.fetchval("SELECT count(*) FROM captures") == before


async def test_malformed_json_is_a_400(api: Api) -> None:
    response = await api.c.post("/v1/captures", content=b"{not json",
                                headers={**api.headers["write"],
                                         "Content-Type": "application/json"})
    assert response.status_code == 400 and problem_field(response)


async def test_a_retried_capture_is_created_once(api: Api) -> None:
    body = api.body()
    key = {"Idempotency-Key": f"cap-{uuid.uuid4()}"}
    first = await api.post(body, **key)
    again = await api.post(body, **key)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.json() == first.json()
    assert await api.captures_of(body["imageRef"]) == 1
    other = api.body()
    reused = await api.post(other, **key)  # the key reused for another capture
    assert reused.status_code == 422 and problem_field(reused) is not None
    assert await api.captures_of(other["imageRef"]) == 0
    # without a key, a retry is a new capture: that is what the key is for
    assert (await api.post(body)).status_code == 201
    assert await api.captures_of(body["imageRef"]) == 2


# -- GET /v1/captures/{id} -------------------------------------------------------------------

async def test_reading_a_capture(api: Api) -> None:
    created = (await api.post(api.body())).json()["data"]
    path = f"/v1/captures/{created['id']}"
    assert (await api.get(path, scope="none")).status_code == 401  # captures are private
    assert (await api.get(path, scope="write")).status_code == 200  # write includes read
    missing = await api.get("/v1/captures/999999999999")
    assert missing.status_code == 404 and "999999999999" in missing.json()["detail"]
    for bad in ("0", "-1", "abc", str(2**63)):
        response = await api.get(f"/v1/captures/{bad}")
        assert response.status_code == 400 and problem_field(response) == ["path.capture_id"]


# -- GET /v1/review --------------------------------------------------------------------------

async def test_the_review_queue_lists_reasons_and_candidates(api: Api) -> None:
    unknown = await api.in_review()
    ambiguous = await api.in_review({"name": "Pikachu"})
    assert [r["code"] for r in unknown["reviewReasons"]] == ["no_match"]
    assert "low_confidence" in [r["code"] for r in ambiguous["reviewReasons"]]
    assert ambiguous["candidates"] and ambiguous["candidates"][0]["name"] == "Pikachu"
    queue = await api.get("/v1/review", pageSize=250)
    assert queue.status_code == 200
    page = queue.json()
    assert page["page"] == 1 and page["pageSize"] == 250 and page["count"] == len(page["data"])
    assert page["totalCount"] >= 2 and all(c["status"] == "needs_review" for c in page["data"])
    if page["totalCount"] <= 250:
        ids = [c["id"] for c in page["data"]]
        assert unknown["id"] in ids and ambiguous["id"] in ids
        assert ids.index(unknown["id"]) < ids.index(ambiguous["id"])  # oldest first
    one = (await api.get("/v1/review", page=2, pageSize=1)).json()
    assert one["count"] == 1 and one["page"] == 2 and one["totalCount"] == page["totalCount"]
    assert (await api.get("/v1/review", scope="none")).status_code == 401


@pytest.mark.parametrize(("params", "field"), [
    ({"pageSize": 251}, "query.pageSize"), ({"pageSize": 0}, "query.pageSize"),
    ({"page": 0}, "query.page"), ({"page": "x"}, "query.page"),
    ({"page": 10_001}, "query.page"),
])
async def test_review_paging_is_bounded(api: Api, params: dict[str, Any], field: str) -> None:
    response = await api.get("/v1/review", **params)
    assert response.status_code == 400 and problem_field(response) == [field]


# -- POST /v1/captures/{id}/resolve ----------------------------------------------------------

async def test_resolving_a_review_stocks_the_card(api: Api) -> None:
    capture = await api.in_review()
    variant_id = await api.db.fetchval(
        "SELECT id FROM card_variants WHERE card_id = 'base1-4' AND '1st-edition' = ANY(stamps)")
    key = {"Idempotency-Key": f"res-{uuid.uuid4()}"}
    body = {"cardId": "base1-4", "variantId": variant_id, "condition": "MP",
            "location": "vault"}
    done = await api.resolve(capture["id"], body, **key)
    assert done.status_code == 200, done.text
    data = done.json()["data"]
    assert (data["status"], data["cardId"], data["variantId"]) == ("processed", "base1-4",
                                                                    variant_id)
    assert data["resolvedBy"] == f"{api.owner}-write" and data["item"]["sku"].endswith("-MP-EN")
    row = await api.db.fetchrow(
        "SELECT i.status, i.location, l.event, l.actor FROM inventory_items i "
        "JOIN inventory_ledger l ON l.item_id = i.id WHERE i.id = $1", data["item"]["id"])
    assert tuple(row) == ("IN_STOCK", "vault", "acquired", f"{api.owner}-write")
    replay = await api.resolve(capture["id"], body, **key)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == done.json()
    twice = await api.resolve(capture["id"], body)
    assert twice.status_code == 409 and "processed" in twice.json()["detail"]
    assert await api.db.fetchval("SELECT count(*) FROM inventory_ledger WHERE actor = $1",
                                 f"{api.owner}-write") == 1


async def test_resolve_without_a_variant_takes_the_usual_printing(api: Api) -> None:
    capture = await api.in_review()
    done = await api.resolve(capture["id"], {"cardId": "base1-4"})
    assert done.status_code == 200, done.text
    data = done.json()["data"]
    stamps = await api.db.fetchval("SELECT stamps FROM card_variants WHERE id = $1",
                                   data["variantId"])
    assert stamps == [] and data["condition"] == "NM" and data["language"] == "en"


async def test_bad_resolutions_write_nothing(api: Api) -> None:
    capture = await api.in_review()
    other_card_variant = await api.db.fetchval(
        "SELECT id FROM card_variants WHERE card_id = 'base1-2' LIMIT 1")
    cases = [
        ({"cardId": "nope-1"}, 422, ["body.cardId"]),
        ({"cardId": "base1-4", "variantId": other_card_variant}, 422, ["body.variantId"]),
        ({}, 400, ["body.cardId"]),
        ({"cardId": ""}, 400, ["body.cardId"]),
        ({"cardId": "base1-4", "condition": "GOOD"}, 400, ["body.condition"]),
        ({"cardId": "base1-4", "language": "EN"}, 400, ["body.language"]),
        ({"cardId": "base1-4", "variantId": 0}, 400, ["body.variantId"]),
        ({"cardId": "base1-4", "unknown": 1}, 400, ["body.unknown"]),
    ]
    for body, status, fields in cases:
        response = await api.resolve(capture["id"], body)
        assert response.status_code == status, (body, response.text)
        assert problem_field(response) == fields, (body, response.json())
    assert (await api.resolve(capture["id"], {"cardId": "base1-4"},
                              scope="read")).status_code == 403
    assert (await api.resolve(capture["id"], {"cardId": "base1-4"},
                              scope="none")).status_code == 401
    assert (await api.resolve(999999999999, {"cardId": "base1-4"})).status_code == 404
    assert (await api.resolve("abc", {"cardId": "base1-4"})).status_code == 400
    still = (await api.get(f"/v1/captures/{capture['id']}")).json()["data"]
    assert still["status"] == "needs_review" and still["item"] is None
    queued = (await api.post(api.body())).json()["data"]
    conflict = await api.resolve(queued["id"], {"cardId": "base1-4"})
    assert conflict.status_code == 409 and "queued" in conflict.json()["detail"]


# -- serve's worker --------------------------------------------------------------------------

async def test_serve_runs_a_worker_that_stocks_a_capture(pg: TestCluster,
                                                         catalog: Database) -> None:
    app = create_app(pg.settings())
    run_worker_in(app, name="serve-test", poll_interval_s=0.2)
    async with serving(app) as client:
        token, _ = await tokens.create_token(app.state.db, owner="intake-test-serve",
                                             scope="write")
        headers = {"Authorization": f"Bearer {token}"}
        created = await client.post("/v1/captures", headers=headers, json={
            "imageRef": f"s3://scans/{uuid.uuid4().hex}.jpg", "ocr": CHARIZARD, "priority": 0})
        location = created.headers["location"]

        async def finished() -> dict[str, Any] | None:
            data = (await client.get(location, headers=headers)).json()["data"]
            return data if data["status"] not in ("queued", "processing") else None
        data = await poll(finished, timeout=30)
        assert data["cardId"] == "base1-4" and data["job"]["status"] == "succeeded"
        assert app.state.worker.name == "serve-test"
        await app.state.db.execute("DELETE FROM api_tokens WHERE owner = 'intake-test-serve'")
    # processed unless another test left base1-4 priced above $100
    assert data["status"] in ("processed", "needs_review")
    assert (data["item"] is not None) == (data["status"] == "processed")


async def test_discarding_a_capture_keeps_who_and_why(api: Api) -> None:
    """Issue 17 item 4: a capture that is no card leaves the queue with its reason."""
    capture = await api.in_review()
    path = f"/v1/captures/{capture['id']}/discard"
    headers = api.headers["write"]
    blank = await api.c.post(path, json={"reason": ""}, headers=headers)
    assert blank.status_code in (400, 422)
    done = await api.c.post(path, json={"reason": "not a card"}, headers=headers)
    assert done.status_code == 200, done.text
    data = done.json()["data"]
    assert data["status"] == "discarded" and data["discarded"]["reason"] == "not a card"
    again = await api.c.post(path, json={"reason": "twice"}, headers=headers)
    assert again.status_code == 409
    missing = await api.c.post("/v1/captures/999999999/discard", json={"reason": "x"},
                               headers=headers)
    assert missing.status_code == 404
