"""The intake worker: takes identify jobs off the queue and turns each capture into an
inventory item, or into a review case with its reasons.

One job: for a photo, OCR it (in a thread: `cardmint.intake.photos.read`); identify the card
from the capture's OCR, pick the printing, look up its latest
price (reads, outside any transaction), then in ONE transaction complete the job (which
fails if the lease was lost, rolling everything back) and write the outcome: product, item
and ledger row, or the capture's review reasons. A failure is recorded with backoff; after
max_attempts the job and its capture are failed.

`Worker.run` keeps `concurrency` loops claiming one job at a time; idle loops wait up to
`poll_interval_s`, or less when a NOTIFY on the queue's channel says work arrived. Stopping
lets every job in progress finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cardmint.catalog.identify import OcrInput, identify
from cardmint.db import Database, Transaction
from cardmint.db.listen import listen
from cardmint.errors import CardmintError
from cardmint.intake import captures, photos, pricing, queue, stock
from cardmint.intake.rules import (
    FIRST_EDITION,
    Reason,
    VariantHint,
    choose_variant,
    reads_first_edition,
    review_reasons,
)

log = logging.getLogger("cardmint.worker")
CANDIDATES_KEPT = 5  # ranked guesses stored on the capture for the reviewer


class LeaseLost(CardmintError):
    """The job's lease passed to another worker before this one completed it."""


@dataclass
class Decision:
    """What processing concluded, before anything is written."""

    candidates: list[dict[str, Any]]
    card_id: str | None
    variant: dict[str, Any] | None
    confidence: float | None
    price: dict[str, Any] | None
    reasons: list[Reason]
    read: dict[str, Any] = field(default_factory=dict)  # a photo's OCR, for the document
    ocr_text: str | None = None  # the text OCR read off the photo


def ocr_of(capture: dict[str, Any]) -> OcrInput:
    fields = capture["fields"] or {}
    return OcrInput(name=fields.get("name"), number=fields.get("number"),
                    set_code=fields.get("set_code"), hp=fields.get("hp"),
                    text=capture["ocr_text"])


def _readable(ocr: OcrInput) -> bool:
    return any(v and str(v).strip() for v in (ocr.name, ocr.number, ocr.text))


async def decide(db: Database, capture: dict[str, Any]) -> Decision:
    """OCR the photo if the capture has one and nothing read yet; then identify, choose the
    printing, price it, and apply the review rules."""
    ocr = ocr_of(capture)
    read: dict[str, Any] = {}
    ocr_text = None
    if capture.get("image_sha256") and not _readable(ocr):
        reading = await photos.read(db.settings, capture["image_sha256"])
        ocr = reading.fields.ocr_input()
        ocr_text = ocr.text
        read = {"fields": {"name": ocr.name, "number": ocr.number, "set_code": ocr.set_code,
                           "hp": ocr.hp}, "reading": reading.as_dict()}
    found = await identify(db, ocr, limit=CANDIDATES_KEPT) if _readable(ocr) else []
    if not found:
        return Decision([], None, None, None, None,
                        review_reasons(matched=False, confidence=None, price_cents=None),
                        read, ocr_text)
    top = found[0]
    hint = VariantHint.from_dict(capture["variant"])
    if reads_first_edition(ocr.text) and FIRST_EDITION not in hint.stamps:
        hint = replace(hint, stamps=(*hint.stamps, FIRST_EDITION))
    variant = choose_variant(await captures.variants_of(db, top.card_id), hint)
    condition = capture["condition"] or stock.DEFAULT_CONDITION
    price = await pricing.latest(db, variant["id"], condition) if variant else None
    reasons = review_reasons(
        matched=True, confidence=top.confidence,
        price_cents=price["price_cents"] if price else None,
        stamps=variant["stamps"] if variant else (), variant_found=variant is not None)
    return Decision([captures.candidate_dict(c) for c in found], top.card_id,
                    dict(variant) if variant else None, top.confidence, price, reasons,
                    read, ocr_text)


async def apply(tx: Transaction, job: queue.Job, capture: dict[str, Any],
                d: Decision) -> str:
    """Write the decision; returns the capture's new status."""
    variant_id = d.variant["id"] if d.variant else None
    if d.reasons or d.variant is None or d.card_id is None:
        await captures.record_outcome(
            tx, capture["id"], status="needs_review", card_id=d.card_id, variant_id=variant_id,
            confidence=d.confidence, candidates=d.candidates,
            found={**d.read, "reasons": [r.as_dict() for r in d.reasons], "price": d.price,
                   "item": None}, ocr_text=d.ocr_text)
        return "needs_review"
    stocked = await stock.receive(
        tx, card_id=d.card_id, variant_id=d.variant["id"],
        condition=capture["condition"] or stock.DEFAULT_CONDITION,
        language=capture["language"] or stock.DEFAULT_LANGUAGE,
        location=capture["location"], acquired_on=capture["created_at"].date(),
        actor=capture["submitter"] or "intake", reason="intake",
        details={"capture_id": capture["id"], "job_id": job.id, "confidence": d.confidence,
                 "price_cents": d.price["price_cents"] if d.price else None})
    await captures.record_outcome(
        tx, capture["id"], status="processed", card_id=d.card_id, variant_id=variant_id,
        confidence=d.confidence, candidates=d.candidates,
        found={**d.read, "reasons": [], "price": d.price, "item": stocked.as_dict()},
        ocr_text=d.ocr_text)
    return "processed"


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Processes intake jobs from the queue until told to stop."""

    def __init__(self, db: Database, *, name: str | None = None, concurrency: int = 1,
                 lease_s: float = 60.0, poll_interval_s: float = 1.0, batch: int = 10,
                 kinds: Sequence[str] = (queue.IDENTIFY,),
                 backoff: queue.Backoff = queue.Backoff(),
                 clock: Callable[[], datetime] | None = None, listen: bool = True) -> None:
        if concurrency < 1 or batch < 1 or lease_s <= 0 or poll_interval_s <= 0:
            raise ValueError("concurrency and batch must be at least 1; lease_s and "
                             "poll_interval_s positive")
        self.db = db
        self.name = name or default_name()
        self.concurrency, self.lease_s, self.batch = concurrency, lease_s, batch
        self.poll_interval_s = poll_interval_s
        self.kinds, self.backoff, self.clock, self.listen = tuple(kinds), backoff, clock, listen
        self._wake = asyncio.Event()
        self.counts: dict[str, int] = {}

    def _now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None

    # -- one job --------------------------------------------------------------------------

    async def process(self, job: queue.Job) -> str:
        """Handle one claimed job; returns processed, needs_review, queued (a retry is
        scheduled), failed, or lost (another worker holds the job now)."""
        try:
            capture = await captures.get(self.db, job.capture_id)
            if capture is None:  # deleted under us: the job went with it (cascade)
                return "lost"
            decision = await decide(self.db, capture)
            async with self.db.transaction() as tx:
                if not await queue.complete(tx, job, now=self._now()):
                    raise LeaseLost(f"job {job.id} attempt {job.attempts}")
                outcome = await apply(tx, job, capture, decision)
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; its writes rolled back", job.id)
            outcome = "lost"
        except Exception as exc:
            outcome = await self._failed(job, exc)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return outcome

    async def _failed(self, job: queue.Job, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("job %s attempt %s/%s failed: %s", job.id, job.attempts,
                    job.max_attempts, error)
        try:
            status = await queue.fail(self.db, job, error, now=self._now(),
                                      backoff=self.backoff)
        except CardmintError as again:  # the lease expires and the job is retried anyway
            log.warning("job %s: could not record the failure: %s", job.id, again)
            return "error"
        return status or "lost"

    async def run_once(self, worker_id: str | None = None, *, limit: int | None = None) -> int:
        """Claim and process up to `limit` (default `batch`) jobs, one at a time so that no
        lease ticks while its job waits; returns how many were handled."""
        handled = 0
        while handled < (limit or self.batch):
            jobs = await queue.claim(self.db, worker_id or self.name, now=self._now(),
                                     lease_s=self.lease_s, kinds=self.kinds)
            if not jobs:
                break
            await self.process(jobs[0])
            handled += 1
        return handled

    # -- the loop ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Process jobs until `stop` is set; jobs in progress finish first."""
        tasks = [asyncio.create_task(self._loop(f"{self.name}/{i}", stop))
                 for i in range(self.concurrency)]
        if self.listen:
            tasks.append(asyncio.create_task(self._listen(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, worker_id: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once(worker_id)
            except Exception as exc:  # the database is away: wait, then try again
                log.warning("worker %s: %s", worker_id, exc)
                handled = 0
            if handled < self.batch:
                await self._idle(stop)
            else:
                await asyncio.sleep(0)  # a full batch: let the other tasks run, then go on

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.poll_interval_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self._wake.clear()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN on the queue's channel (one pooled connection) so idle loops wake at once;
        polling covers what is missed while the connection is being re-made."""
        await listen(self.db, queue.CHANNEL, self._notified, stop,
                     retry_s=self.poll_interval_s, on_listening=self._wake.set)

