"""The intake worker on the real cluster and the full catalog: CardMint's review rules (pure,
then each sending a real capture to review), a confident cheap capture becoming an inventory
item with its ledger row, failures retried to `failed`, a lost lease rolling its writes back,
a NOTIFY waking an idle worker, and `cardmint worker --once`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cardmint.catalog.identify import OcrInput
from cardmint.db import Database
from cardmint.intake import captures, queue
from cardmint.intake.captures import NewCapture
from cardmint.intake.rules import (
    VariantHint,
    choose_variant,
    reads_first_edition,
    review_reasons,
)
from cardmint.intake.stock import make_sku
from cardmint.intake.worker import Worker
from support import TestCluster, poll

ROOT = Path(__file__).resolve().parent.parent
CHARIZARD = OcrInput(name="Charizard", number="4/102", set_code="base1", hp=120)

# -- the rules (pure) -------------------------------------------------------------------------


def codes(**kwargs: Any) -> list[str]:
    base = {"matched": True, "confidence": 0.97, "price_cents": 500}
    return [r.code for r in review_reasons(**{**base, **kwargs})]


def test_review_rules() -> None:
    assert codes() == []
    assert codes(confidence=0.85) == []  # the threshold itself passes
    assert codes(confidence=0.8499) == ["low_confidence"]
    assert codes(price_cents=10_000) == []  # $100 is not above $100
    assert codes(price_cents=10_001) == ["high_value"]
    assert codes(price_cents=None) == []  # never priced: nothing says it is valuable
    assert codes(stamps=["1st-edition"]) == ["first_edition"]
    assert codes(matched=False) == ["no_match"]
    assert codes(variant_found=False) == ["variant_unknown"]
    assert codes(confidence=0.5, price_cents=50_000, stamps=["1st-edition"]) == [
        "low_confidence", "high_value", "first_edition"]


VARIANTS = [
    {"id": 11, "position": 2, "type": "holo", "subtype": "shadowless", "foil": None,
     "stamps": ["1st-edition"]},
    {"id": 10, "position": 1, "type": "holo", "subtype": "unlimited", "foil": None,
     "stamps": []},
    {"id": 12, "position": 3, "type": "holo", "subtype": "shadowless", "foil": None,
     "stamps": []},
]


def test_choosing_the_printing() -> None:
    assert choose_variant(VARIANTS)["id"] == 10  # the first unstamped
    assert choose_variant(VARIANTS, VariantHint(stamps=("1st-edition",)))["id"] == 11
    assert choose_variant(VARIANTS, VariantHint(subtype="Shadowless"))["id"] == 11
    assert choose_variant(VARIANTS, VariantHint(type="reverse")) is None
    assert choose_variant([VARIANTS[0]])["id"] == 11  # only stamped ones: the first
    assert choose_variant([]) is None
    assert reads_first_edition("Charizard 1st Edition 4/102")
    assert reads_first_edition("EDITION 1") and not reads_first_edition("Charizard 4/102")
    assert make_sku("base1-4", 7, "NM", "en") == "BASE1-4-V7-NM-EN"


# -- the worker -------------------------------------------------------------------------------


class Intake:
    """Captures made through cardmint.intake, processed by a worker, checked afterwards."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.submitter = f"worker-test-{uuid.uuid4().hex[:8]}"
        self.worker = Worker(db, name="test-worker", listen=False)
        self.price_ids: list[int] = []

    async def capture(self, ocr: OcrInput = CHARIZARD, **kwargs: Any) -> int:
        # priority 0: ahead of anything other tests left queued
        new = NewCapture(image_ref=f"test://worker/{uuid.uuid4().hex}", ocr=ocr, priority=0,
                         **kwargs)
        return (await captures.create(self.db, new, submitter=self.submitter))["id"]

    async def processed(self, capture_id: int) -> dict[str, Any]:
        """Run the worker one job at a time until this capture is out of the queue."""
        async def done() -> dict[str, Any] | None:
            await self.worker.run_once(limit=1)
            c = await captures.get(self.db, capture_id)
            return c if c["status"] in ("processed", "needs_review", "failed") else None
        return await poll(done, timeout=30)

    async def variant_id(self, card_id: str, stamps: list[str] | None = None) -> int:
        return await self.db.fetchval(
            "SELECT id FROM card_variants WHERE card_id = $1 AND stamps = $2::text[] "
            "ORDER BY position LIMIT 1", card_id, stamps or [])

    async def price(self, card_id: str, cents: int, stamps: list[str] | None = None) -> None:
        """The card's latest price, whatever prices other tests left: it is observed in the
        future (and deleted after the test)."""
        self.price_ids.append(await self.db.fetchval(
            "INSERT INTO prices (card_id, variant_id, condition, source, price_cents, "
            "                    observed_at) "
            "VALUES ($1, $2, 'NM', $3, $4, now() + interval '100 years') RETURNING id",
            card_id, await self.variant_id(card_id, stamps), self.submitter, cents))


@pytest.fixture
async def intake(catalog: Database) -> AsyncIterator[Intake]:
    it = Intake(catalog)
    try:
        yield it
    finally:
        await catalog.execute("DELETE FROM prices WHERE id = ANY($1::bigint[])", it.price_ids)


async def test_a_confident_cheap_capture_becomes_an_item_with_its_ledger_row(
        intake: Intake) -> None:
    await intake.price("base1-4", 5_000)
    capture_id = await intake.capture(location="binder-1")
    c = await intake.processed(capture_id)
    assert c["status"] == "processed", c["reasons"]
    assert c["card_id"] == "base1-4" and c["confidence"] >= 0.85
    assert c["variant_id"] == await intake.variant_id("base1-4")  # unlimited, not 1st ed.
    assert c["price"]["price_cents"] == 5_000 and c["reasons"] == []
    assert c["candidates"][0]["card_id"] == "base1-4" and c["job"]["status"] == "succeeded"
    item = await intake.db.fetchrow(
        "SELECT i.*, p.sku, p.card_id, p.variant_id, p.condition, p.language "
        "FROM inventory_items i JOIN products p ON p.id = i.product_id WHERE i.id = $1",
        c["item"]["item_id"])
    assert (item["status"], item["location"], item["card_id"], item["condition"],
            item["language"]) == ("IN_STOCK", "binder-1", "base1-4", "NM", "en")
    assert item["sku"] == c["item"]["sku"] == make_sku("base1-4", c["variant_id"], "NM", "en")
    ledger = await intake.db.fetch("SELECT * FROM inventory_ledger WHERE item_id = $1",
                                   item["id"])
    assert [(r["event"], r["to_status"], r["actor"]) for r in ledger] == [
        ("acquired", "IN_STOCK", intake.submitter)]
    assert ledger[0]["details"]["capture_id"] == capture_id
    # a second copy of the same card is another item of the same product
    again = await intake.processed(await intake.capture())
    assert again["item"]["product_id"] == c["item"]["product_id"]
    assert again["item"]["item_id"] != c["item"]["item_id"]


@pytest.mark.parametrize(("case", "reason"), [
    ("expensive", "high_value"),
    ("first_edition", "first_edition"),
    ("first_edition_text", "first_edition"),
    ("ambiguous", "low_confidence"),
    ("unknown", "no_match"),
    ("image_only", "no_match"),
    ("no_such_printing", "variant_unknown"),
])
async def test_each_review_rule_sends_a_capture_to_review(intake: Intake, case: str,
                                                          reason: str) -> None:
    kwargs: dict[str, Any] = {}
    if case == "expensive":
        await intake.price("base1-4", 25_000)
    elif case == "first_edition":
        kwargs["variant"] = VariantHint(stamps=("1st-edition",))
    elif case == "first_edition_text":
        kwargs["ocr"] = OcrInput(name="Charizard", number="4/102", hp=120,
                                 text="Charizard\n1st Edition\nFire Spin")
    elif case == "ambiguous":
        kwargs["ocr"] = OcrInput(name="Pikachu")
    elif case == "unknown":
        kwargs["ocr"] = OcrInput(name="Qwxzvjjk Pqqvwxz")
    elif case == "image_only":
        kwargs["ocr"] = OcrInput()
    elif case == "no_such_printing":
        kwargs["variant"] = VariantHint(type="jumbo-gold")
    before = await intake.db.fetchval("SELECT count(*) FROM inventory_ledger WHERE actor = $1",
                                      intake.submitter)
    c = await intake.processed(await intake.capture(**kwargs))
    assert c["status"] == "needs_review"
    assert reason in [r["code"] for r in c["reasons"]] and all(r["message"] for r in c["reasons"])
    assert c["item"] is None and c["job"]["status"] == "succeeded"
    if reason != "no_match":
        assert c["card_id"] and c["candidates"]
    assert await intake.db.fetchval("SELECT count(*) FROM inventory_ledger WHERE actor = $1",
                                    intake.submitter) == before  # nothing was stocked


async def test_a_failing_job_is_retried_with_backoff_then_failed(intake: Intake) -> None:
    # a capture whose stored document asks for a condition products refuse: the job fails
    # at its last write, every attempt
    capture_id = await intake.capture()
    await intake.db.execute(
        "UPDATE captures SET ocr = ocr || '{\"condition\": \"MINT\"}' WHERE id = $1", capture_id)
    await intake.db.execute("UPDATE processing_jobs SET max_attempts = 2 WHERE capture_id = $1",
                            capture_id)
    [job] = await queue.claim(intake.db, "w", kinds=["identify"], lease_s=60, limit=1)
    while job.capture_id != capture_id:  # others' leftovers first, if any share priority 0
        await intake.worker.process(job)
        [job] = await queue.claim(intake.db, "w", kinds=["identify"], lease_s=60, limit=1)
    assert await intake.worker.process(job) == "queued"
    c = await captures.get(intake.db, capture_id)
    assert c["status"] == "queued" and "condition" in c["job"]["last_error"]
    assert c["job"]["run_after"] > await intake.db.fetchval("SELECT now()")  # backing off
    later = c["job"]["run_after"] + timedelta(seconds=1)
    jobs = await queue.claim(intake.db, "w", now=later, kinds=["identify"], limit=50)
    [retry] = [j for j in jobs if j.capture_id == capture_id]
    for other in jobs:
        if other is not retry:
            await intake.worker.process(other)
    assert await intake.worker.process(retry) == "failed"
    c = await captures.get(intake.db, capture_id)
    assert c["status"] == "failed" and c["job"]["attempts"] == 2 and "condition" in c["error"]
    assert c["item"] is None


async def test_a_worker_that_lost_its_lease_writes_nothing(intake: Intake) -> None:
    capture_id = await intake.capture()
    t = await intake.db.fetchval("SELECT now()")
    jobs = await queue.claim(intake.db, "slow", now=t, lease_s=5, kinds=["identify"], limit=50)
    taken = await queue.claim(intake.db, "fast", now=t + timedelta(seconds=6), lease_s=60,
                              kinds=["identify"], limit=50)
    [stale] = [j for j in jobs if j.capture_id == capture_id]
    [fresh] = [j for j in taken if j.capture_id == capture_id]
    assert await intake.worker.process(stale) == "lost"
    c = await captures.get(intake.db, capture_id)
    assert c["status"] == "processing" and c["item"] is None  # rolled back
    assert await intake.worker.process(fresh) == "processed"
    for job in taken:
        if job is not fresh:
            await intake.worker.process(job)
    assert (await captures.get(intake.db, capture_id))["status"] == "processed"


async def test_a_notify_wakes_an_idle_worker_and_stop_is_graceful(intake: Intake) -> None:
    await intake.price("base1-4", 5_000)
    await poll(lambda: _drained(intake))  # so the worker goes idle
    # polling every 60 s: only the NOTIFY can make it pick the capture up within the poll
    worker = Worker(intake.db, name="listening", poll_interval_s=60, listen=True)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await poll(lambda: _listening(intake.db))
        capture_id = await intake.capture()
        c = await poll(lambda: _finished(intake.db, capture_id), timeout=10)
        assert c["status"] == "processed"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert worker.counts.get("processed", 0) >= 1


async def _drained(intake: Intake) -> bool:
    return await intake.worker.run_once() == 0


async def _listening(db: Database, pid: int | None = None) -> bool:
    """A backend is listening on the queue's channel (that of a client process `pid`)."""
    return bool(await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
        "AND ($1::int IS NULL OR application_name = 'cardmint/' || $1::int)", pid))


async def _finished(db: Database, capture_id: int) -> dict[str, Any] | None:
    c = await captures.get(db, capture_id)
    return c if c["status"] in ("processed", "needs_review", "failed") else None


async def test_the_worker_command_handles_the_ready_jobs(intake: Intake,
                                                         pg: TestCluster) -> None:
    capture_id = await intake.capture(ocr=OcrInput(name="Qwxzvjjk Pqqvwxz"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "worker", "--once", "--json"],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"].get("needs_review", 0) >= 1
    assert (await captures.get(intake.db, capture_id))["status"] == "needs_review"


async def test_the_worker_command_stops_gracefully_on_sigterm(intake: Intake,
                                                              pg: TestCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cardmint", "worker", "--concurrency", "2", "--json",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await poll(lambda: _listening(intake.db, proc.pid), timeout=30)
        capture_id = await intake.capture(ocr=OcrInput(name="Qwxzvjjk Pqqvwxz"))
        await poll(lambda: _finished(intake.db, capture_id), timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["counts"].get("needs_review", 0) >= 1
