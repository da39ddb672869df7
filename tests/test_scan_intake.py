"""Photos through the intake on the real cluster: uploaded to POST /v1/captures (multipart or
an image body), stored, read by the worker's OCR, identified and stocked, or sent to review
with what was read; the limits answered with 413/415/422 and nothing written; the photo
served only with the read scope (API and pages); `cardmint scan DIR` with its progress bar,
resumed by running it again."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from cardmint import tokens
from cardmint.api.app import create_app
from cardmint.db import Database
from cardmint.intake import captures
from cardmint.intake.worker import Worker
from cardmint.scan.store import ImageStore
from scan_photos import card, need_fonts, photo
from support import TestCluster, poll, serving

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 400_000  # small, so that a 413 is cheap to provoke


class Client:
    def __init__(self, c: httpx.AsyncClient, db: Database) -> None:
        self.c, self.db = c, db
        self.headers: dict[str, dict[str, str]] = {}
        self.tokens: dict[str, str] = {}
        self.worker = Worker(db, name="scan-test", listen=False)

    async def login(self) -> None:
        owner = f"scan-test-{uuid.uuid4().hex[:8]}"
        for scope in ("read", "write"):
            token, _ = await tokens.create_token(self.db, owner=f"{owner}-{scope}", scope=scope)
            self.tokens[scope] = token
            self.headers[scope] = {"Authorization": f"Bearer {token}"}

    async def upload(self, data: bytes, scope: str = "write", **form: str) -> httpx.Response:
        return await self.c.post("/v1/captures", files={"image": ("card.jpg", data,
                                                                  "image/jpeg")},
                                 data={"priority": "0", **form},
                                 headers=self.headers.get(scope, {}))

    async def processed(self, capture_id: int) -> dict[str, Any]:
        """The capture once the worker is done with it."""
        async def done() -> dict[str, Any] | None:
            await self.worker.run_once(limit=1)
            c = await captures.get(self.db, capture_id)
            return c if c and c["status"] in ("processed", "needs_review", "failed") else None
        return await poll(done, timeout=60)  # type: ignore[no-any-return]

    async def count(self) -> int:
        return await self.db.fetchval("SELECT count(*) FROM captures")  # type: ignore[no-any-return]


@pytest.fixture
async def client(pg: TestCluster, catalog: Database) -> AsyncIterator[Client]:
    need_fonts()
    app = create_app(pg.settings().model_copy(update={"image_max_bytes": MAX_BYTES}))
    async with serving(app) as c:
        api = Client(c, app.state.db)
        await api.login()
        yield api


async def test_an_uploaded_photo_is_read_identified_and_stocked(client: Client) -> None:
    response = await client.upload(photo("base1-4", "perspective"), condition="LP",
                                   location="binder A")
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert response.headers["Location"] == f"/v1/captures/{created['id']}"
    assert created["status"] == "queued" and created["imageRef"].startswith("sha256:")
    assert created["imageUrl"] == f"/v1/captures/{created['id']}/image"
    assert (created["condition"], created["location"]) == ("LP", "binder A")

    done = await client.processed(created["id"])
    assert done["status"] == "processed", done["reasons"]
    assert done["card_id"] == "base1-4" and done["confidence"] >= 0.85
    assert done["fields"]["name"] == "Charizard" and done["fields"]["number"] == "4/102"
    assert "Charizard" in (done["ocr_text"] or "")
    assert done["reading"]["engine"].startswith("rapidocr") and done["reading"]["corners"]
    item = await client.db.fetchrow("SELECT i.location, p.condition, p.card_id FROM "
                                    "inventory_items i JOIN products p ON p.id = i.product_id "
                                    "WHERE i.id = $1", done["item"]["item_id"])
    assert dict(item) == {"location": "binder A", "condition": "LP", "card_id": "base1-4"}
    shown = (await client.c.get(f"/v1/captures/{created['id']}",
                                headers=client.headers["read"])).json()["data"]
    assert shown["ocr"]["name"] == "Charizard" and shown["cardId"] == "base1-4"


async def test_an_image_body_with_options_in_the_query(client: Client) -> None:
    data = photo("sv02-113", "scan")
    response = await client.c.post(
        "/v1/captures", content=data, params={"location": "box 7", "priority": "0"},
        headers={**client.headers["write"], "Content-Type": "image/jpeg",
                 "Idempotency-Key": f"scan-{uuid.uuid4().hex}"})
    assert response.status_code == 201, response.text
    again = await client.c.post(
        "/v1/captures", content=data, params={"location": "box 7", "priority": "0"},
        headers={**client.headers["write"], "Content-Type": "image/jpeg",
                 "Idempotency-Key": response.request.headers["Idempotency-Key"]})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["data"]["id"] == response.json()["data"]["id"]  # one capture
    done = await client.processed(response.json()["data"]["id"])
    assert done["status"] == "processed" and done["card_id"] == "sv02-113"
    assert done["fields"]["set_code"] == "PAL" and done["location"] == "box 7"


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 90), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("send, status, field, words", [
    ({"content": b"\xff\xd8\xff" + b"\0" * (MAX_BYTES + 10), "type": "image/jpeg"}, 413,
     "body.image", "the limit is 400,000"),
    # past the limit and a form's room: refused by the body limit before it is read
    ({"content": b"\xff\xd8\xff" + b"\0" * (MAX_BYTES + 70_000), "type": "image/jpeg"},
     413, "body", "larger than"),
    ({"content": b"GIF89a" + b"\0" * 200, "type": "image/jpeg"}, 415, "body.image",
     "JPEG, PNG or WebP"),
    ({"content": _tiny_png(), "type": "image/png"}, 422, "body.image", "200 pixels"),
    ({"form": {"condition": "MINT"}}, 422, "body.condition", "condition must be one of"),
    ({"form": {"priority": "-3"}}, 422, "body.priority", "priority"),
    ({"form": {"nothing": "here"}, "no_file": True}, 422, "body.image", "no file part"),
])
async def test_refused_uploads_name_the_problem_and_write_nothing(
        client: Client, send: dict[str, Any], status: int, field: str, words: str) -> None:
    before = await client.count()
    if "form" in send:
        files = None if send.get("no_file") else {
            "image": ("c.jpg", photo("sm5-43", "scan"), "image/jpeg")}
        response = await client.c.post("/v1/captures", data=send["form"], files=files or
                                        {"other": ("x.txt", b"x", "text/plain")},
                                        headers=client.headers["write"])
    else:
        response = await client.c.post("/v1/captures", content=send["content"],
                                        headers={**client.headers["write"],
                                                 "Content-Type": send["type"]})
    assert response.status_code == status, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert words in problem["detail"] and problem["errors"][0]["field"] == field
    assert await client.count() == before


async def test_uploads_need_the_write_scope(client: Client) -> None:
    before = await client.count()
    assert (await client.upload(photo("sm5-43", "scan"), scope="none")).status_code == 401
    assert (await client.upload(photo("sm5-43", "scan"), scope="read")).status_code == 403
    assert await client.count() == before


async def test_the_photo_is_served_only_with_the_read_scope(client: Client,
                                                            pg: TestCluster) -> None:
    created = (await client.upload(photo("pl3-10", "scan"))).json()["data"]
    url = created["imageUrl"]
    assert (await client.c.get(url)).status_code == 401
    assert (await client.c.get(url, headers={"Authorization": "Bearer cm_nope"})
            ).status_code == 401
    response = await client.c.get(url, headers=client.headers["read"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    stored = ImageStore.from_settings(pg.settings()).get(created["imageRef"][len("sha256:"):])
    assert response.content == stored
    assert "private" in response.headers["cache-control"]
    cached = await client.c.get(url, headers={**client.headers["read"],
                                              "If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304 and not cached.content
    json_capture = await client.c.post("/v1/captures", json={"imageRef": "s3://x/y.jpg",
                                                             "ocr": {"name": "Pikachu"}},
                                       headers=client.headers["write"])
    no_photo = f"/v1/captures/{json_capture.json()['data']['id']}/image"
    assert (await client.c.get(no_photo, headers=client.headers["read"])).status_code == 404

    # the pages: a session cookie with the read scope, else sent to sign in
    page = f"/captures/{created['id']}/photo"
    anonymous = await client.c.get(page, headers={"Accept": "text/html"})
    assert anonymous.status_code == 303 and "/signin" in anonymous.headers["location"]
    client.c.cookies.set("cardmint_session", client.tokens["read"])
    try:
        shown = await client.c.get(page)
        assert shown.status_code == 200 and shown.content == stored
    finally:
        client.c.cookies.clear()


async def test_a_photo_without_a_readable_card_goes_to_review(client: Client) -> None:
    noise = Image.fromarray(np.random.default_rng(5).integers(0, 255, (500, 400, 3),
                                                               dtype=np.uint8))
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=50)
    created = (await client.upload(out.getvalue())).json()["data"]
    done = await client.processed(created["id"])
    assert done["status"] == "needs_review"
    assert [r["code"] for r in done["reasons"]] == ["no_match"]
    assert done["reading"] is not None  # what OCR saw is kept for the reviewer


def _cardmint(pg: TestCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(pg.home), COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=REPO)


async def test_cardmint_scan_stocks_a_folder_and_resumes(pg: TestCluster, catalog: Database,
                                                         tmp_path: Path) -> None:
    need_fonts()
    folder = tmp_path / "scans"
    folder.mkdir()
    tag = uuid.uuid4().hex[:6]  # fresh bytes: no earlier run of the suite sent these
    ids = ("sm5-43", "swsh1-84", "pl3-10")
    for i, card_id in enumerate(ids[:2]):
        (folder / f"{i}-{card_id}.jpg").write_bytes(photo(card_id, "table", seed=hash(tag)))
    (folder / "notes.jpg").write_bytes(b"not a photo at all")
    (folder / "README.txt").write_text("ignored: not a photo by its name")

    # first run only queues (as if interrupted before reading): 2 sent, 1 refused
    first = await asyncio.to_thread(_cardmint, pg, "scan", str(folder), "--no-process",
                                    "--location", f"tray-{tag}", "--json")
    assert first.returncode == 1, first.stderr  # a file was refused
    report = json.loads(first.stdout)
    assert report["counts"]["queued"] == 2 and report["counts"]["refused"] == 1
    assert "JPEG, PNG or WebP" in next(f["message"] for f in report["files"]
                                       if f["name"] == "notes.jpg")

    # a third photo, and the command again: the two are skipped, all three read and stocked
    (folder / f"2-{ids[2]}.jpg").write_bytes(photo(ids[2], "table", seed=hash(tag)))
    second = await asyncio.to_thread(_cardmint, pg, "scan", str(folder), "--location",
                                     f"tray-{tag}")
    assert second.returncode == 1, second.stderr
    assert "Sending photos" in second.stderr and "3/3" in second.stderr  # the progress bar
    assert "Reading cards" in second.stderr
    assert "sent before (skipped)" in second.stdout and "identified and stocked" in second.stdout
    stocked = await catalog.fetch(
        "SELECT p.card_id FROM inventory_items i JOIN products p ON p.id = i.product_id "
        "WHERE i.location = $1 ORDER BY p.card_id", f"tray-{tag}")
    assert [r["card_id"] for r in stocked] == sorted(ids)
    assert all(card(i) for i in ids)


async def test_the_scan_form_without_javascript(client: Client) -> None:
    """The page's form posted as is: several photos queued at once, CSRF required, a photo
    refused with the reason on the page (and the ones before it kept)."""
    from cardmint.web.session import csrf_for

    token = client.tokens["write"]
    client.c.cookies.set("cardmint_session", token)
    try:
        files = [("image", ("a.jpg", photo("sm5-43", "scan"), "image/jpeg")),
                 ("image", ("b.jpg", photo("pl3-10", "scan"), "image/jpeg"))]
        form = {"csrf": csrf_for(token), "condition": "MP", "location": "drawer 2"}
        before = await client.count()
        refused = await client.c.post("/scan/photos", data={"condition": "MP"}, files=files,
                                      headers={"Accept": "text/html"})
        assert refused.status_code == 403 and await client.count() == before  # no CSRF
        sent = await client.c.post("/scan/photos", data=form, files=files,
                                   headers={"Accept": "text/html"})
        assert sent.status_code == 303, sent.text
        assert sent.headers["location"].endswith("&count=2")
        assert await client.count() == before + 2
        page = await client.c.get(sent.headers["location"])
        assert "2 photos from capture" in page.text
        bad = [files[0], ("image", ("c.gif", b"GIF89a" + b"\0" * 64, "image/gif"))]
        partly = await client.c.post("/scan/photos", data=form, files=bad,
                                     headers={"Accept": "text/html"})
        assert partly.status_code == 415
        assert "Photo 2 of 2: the image must be a JPEG, PNG or WebP file" in partly.text
        assert await client.count() == before + 3
    finally:
        client.c.cookies.clear()
