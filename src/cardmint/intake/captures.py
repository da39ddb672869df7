"""Captures: a scanned card on its way into inventory.

Life: `queued` (created with its processing job, in one transaction) -> `processing` (a
worker holds the job) -> `processed` (an inventory item exists) or `needs_review` (reasons
given; an operator resolves it into `processed`) or `failed` (the job ran out of attempts).

What the schema has no column for lives in the `ocr` jsonb document, under fixed keys:
`fields` (name, number, set_code, hp as read), `metadata` (the submitter's, opaque),
`submitter`, the item's `condition`, `language`, `location`, the `variant` hint, and what
processing found: `reasons`, `price`, `item`, `resolved_by`, `resolved_at`; for a photo,
`reading` (the OCR lines with their scores and boxes, the card's outline, timings) and the
`fields` OCR read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardmint import printings
from cardmint.catalog.identify import Candidate, OcrInput
from cardmint.catalog.search import MAX_PAGE, MAX_PAGE_SIZE, Page
from cardmint.db import Database, Row, one
from cardmint.db.values import CONDITIONS
from cardmint.errors import CardmintError, ValidationError
from cardmint.intake import pricing, queue, stock
from cardmint.intake.rules import VariantHint, choose_variant
from cardmint.intake.tx import Executor, atomic

LANGUAGE = re.compile(r"^[a-z]{2}(-[a-z]{2,4})?$")  # the products.language check


class CaptureNotFound(CardmintError):
    """No capture has this id (the API's 404)."""


class NotReviewable(CardmintError):
    """The capture is not waiting for review (the API's 409)."""

    def __init__(self, capture_id: int, status: str) -> None:
        super().__init__(f"capture {capture_id} is {status}, not needs_review")
        self.status = status


@dataclass(frozen=True)
class NewCapture:
    image_ref: str
    ocr: OcrInput = field(default_factory=OcrInput)
    variant: VariantHint | None = None
    condition: str = stock.DEFAULT_CONDITION
    language: str = stock.DEFAULT_LANGUAGE
    location: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    priority: int = queue.DEFAULT_PRIORITY
    image_sha256: str | None = None  # a photo in the image store (cardmint.intake.photos)
    source_sha256: str | None = None  # of the photo's bytes as uploaded

    def __post_init__(self) -> None:
        # The API's models enforce these too; this guards every other caller.
        if not self.image_ref or not self.image_ref.strip():
            raise ValidationError("imageRef must not be empty", field="imageRef")
        check_item_fields(self.condition, self.language)
        if not 0 <= self.priority <= 1000:
            raise ValidationError("priority must be between 0 and 1000", field="priority")


def check_item_fields(condition: str | None, language: str | None) -> None:
    if condition is not None and condition not in CONDITIONS:
        raise ValidationError(f"condition must be one of {', '.join(CONDITIONS)}",
                              field="condition")
    if language is not None and not LANGUAGE.match(language):
        raise ValidationError("language must look like en or pt-br", field="language")


SELECT_SQL = """
SELECT c.id, c.image_ref, c.status, c.ocr_text, c.ocr, c.candidates, c.card_id, c.variant_id,
       c.confidence, c.error, c.created_at, c.updated_at, c.image_sha256, c.source_sha256,
       j.id AS job_id, j.status AS job_status, j.attempts, j.max_attempts, j.run_after,
       j.last_error, j.finished_at
FROM captures c
LEFT JOIN LATERAL (SELECT * FROM processing_jobs p WHERE p.capture_id = c.id
                   ORDER BY p.id DESC LIMIT 1) j ON true
"""
INSERT_SQL = """
INSERT INTO captures (image_ref, status, ocr_text, ocr, image_sha256, source_sha256)
VALUES ($1, 'queued', $2, $3, $4, $5)
RETURNING id
"""
VARIANTS_SQL = """
SELECT id, card_id, position, type, subtype, size, stamps, foil
FROM card_variants WHERE card_id = $1 ORDER BY position
"""
# `||` merges the outcome's keys into the document, keeping what the submitter sent.
OUTCOME_SQL = """
UPDATE captures
SET status = $2, card_id = $3, variant_id = $4, confidence = $5, candidates = $6,
    ocr = coalesce(ocr, '{}'::jsonb) || $7::jsonb, ocr_text = coalesce($8, ocr_text),
    error = NULL, updated_at = now()
WHERE id = $1
"""


def view(row: Row) -> dict[str, Any]:
    """A capture as callers see it: the document's keys lifted beside the columns."""
    doc = row["ocr"] or {}
    job = None if row["job_id"] is None else {
        "id": row["job_id"], "status": row["job_status"], "attempts": row["attempts"],
        "max_attempts": row["max_attempts"], "run_after": row["run_after"],
        "last_error": row["last_error"], "finished_at": row["finished_at"]}
    return {
        "id": row["id"], "status": row["status"], "image_ref": row["image_ref"],
        "ocr_text": row["ocr_text"], "fields": doc.get("fields", {}),
        "metadata": doc.get("metadata", {}), "submitter": doc.get("submitter"),
        "condition": doc.get("condition"), "language": doc.get("language"),
        "location": doc.get("location"), "variant": doc.get("variant"),
        "card_id": row["card_id"], "variant_id": row["variant_id"],
        "confidence": row["confidence"], "candidates": row["candidates"] or [],
        "reasons": doc.get("reasons", []), "price": doc.get("price"), "item": doc.get("item"),
        "resolved_by": doc.get("resolved_by"), "error": row["error"], "job": job,
        "image_sha256": row["image_sha256"], "source_sha256": row["source_sha256"],
        "reading": doc.get("reading"), "discarded": doc.get("discarded"),
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def candidate_dict(c: Candidate) -> dict[str, Any]:
    return {"card_id": c.card_id, "name": c.name, "set_id": c.set_id, "set_name": c.set_name,
            "number": c.number, "confidence": c.confidence, "evidence": c.evidence}


async def create(ex: Executor, new: NewCapture, *, submitter: str) -> dict[str, Any]:
    """A queued capture and its identify job, in one transaction."""
    doc = {
        "fields": {"name": new.ocr.name, "number": new.ocr.number,
                   "set_code": new.ocr.set_code, "hp": new.ocr.hp},
        "metadata": dict(new.metadata), "submitter": submitter,
        "condition": new.condition, "language": new.language, "location": new.location,
        "variant": new.variant.as_dict() if new.variant and not new.variant.empty else None,
    }
    async with atomic(ex) as tx:
        capture_id = await tx.fetchval(INSERT_SQL, new.image_ref, new.ocr.text, doc,
                                       new.image_sha256, new.source_sha256)
        await queue.enqueue(tx, capture_id, priority=new.priority)
        row = one(await tx.fetchrow(SELECT_SQL + " WHERE c.id = $1", capture_id))
    return view(row)


async def get(ex: Executor, capture_id: int) -> dict[str, Any] | None:
    row = await ex.fetchrow(SELECT_SQL + " WHERE c.id = $1", capture_id)
    return view(row) if row is not None else None


async def review_queue(db: Database, *, page: int = 1, page_size: int = 50) -> Page:
    """Captures waiting for an operator, oldest first (ix_captures_status_created_at)."""
    if not 1 <= page <= MAX_PAGE:
        raise ValidationError(f"page must be between 1 and {MAX_PAGE}", field="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError(f"pageSize must be between 1 and {MAX_PAGE_SIZE}",
                              field="pageSize")
    total = await db.fetchval("SELECT count(*) FROM captures WHERE status = 'needs_review'")
    rows = await db.fetch(SELECT_SQL + " WHERE c.status = 'needs_review' "
                          "ORDER BY c.created_at, c.id LIMIT $1 OFFSET $2",
                          page_size, (page - 1) * page_size)
    return Page(rows=[view(r) for r in rows], total_count=total, page=page,
                page_size=page_size)


async def variants_of(ex: Executor, card_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await ex.fetch(VARIANTS_SQL, card_id)]


async def printings_of(ex: Executor, card_ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Each card's printings as (variant id, name in full), in catalog order: the review
    page's picker for every candidate, in one query."""
    out: dict[str, list[tuple[int, str]]] = {}
    for r in await ex.fetch("SELECT id, card_id, type, subtype, size, stamps, foil FROM "
                            "card_variants WHERE card_id = ANY($1::text[]) "
                            "ORDER BY card_id, position", sorted(set(card_ids))):
        out.setdefault(r["card_id"], []).append((r["id"], printings.name(r)))
    return out


async def record_outcome(ex: Executor, capture_id: int, *, status: str, card_id: str | None,
                         variant_id: int | None, confidence: float | None,
                         candidates: list[dict[str, Any]], found: dict[str, Any],
                         ocr_text: str | None = None) -> None:
    """What processing found (`found` merges into the document: reasons, price, item, and
    for a photo what OCR read; `ocr_text`, when given, replaces the capture's text)."""
    await ex.execute(OUTCOME_SQL, capture_id, status, card_id, variant_id, confidence,
                     candidates, found, ocr_text)


async def resolve(ex: Executor, capture_id: int, *, card_id: str, actor: str,
                  variant_id: int | None = None, condition: str | None = None,
                  language: str | None = None, location: str | None = None) -> dict[str, Any]:
    """The operator's answer to a capture in review: the card (and printing) it is. The
    capture becomes processed and its inventory item is created, in one transaction."""
    check_item_fields(condition, language)
    async with atomic(ex) as tx:
        row = await tx.fetchrow("SELECT status, ocr, created_at FROM captures WHERE id = $1 "
                                "FOR UPDATE", capture_id)
        if row is None:
            raise CaptureNotFound(f"no capture {capture_id}")
        if row["status"] != "needs_review":
            raise NotReviewable(capture_id, row["status"])
        variants = await variants_of(tx, card_id)
        if not variants:
            known = await tx.fetchval("SELECT 1 FROM cards WHERE id = $1", card_id)
            raise ValidationError(f"no card {card_id!r}" if not known
                                  else f"card {card_id!r} has no variants", field="cardId")
        doc = dict(row["ocr"] or {})
        variant: Mapping[str, Any] | None
        if variant_id is not None:
            variant = next((v for v in variants if v["id"] == variant_id), None)
            if variant is None:
                raise ValidationError(f"variant {variant_id} is not a printing of {card_id}",
                                      field="variantId")
        else:
            # the hinted printing, else the usual one (variants is not empty: checked above)
            variant = (choose_variant(variants, VariantHint.from_dict(doc.get("variant")))
                       or choose_variant(variants) or variants[0])
        doc["condition"] = condition or doc.get("condition") or stock.DEFAULT_CONDITION
        doc["language"] = language or doc.get("language") or stock.DEFAULT_LANGUAGE
        doc["location"] = location if location is not None else doc.get("location")
        stocked = await stock.receive(
            tx, card_id=card_id, variant_id=variant["id"], condition=doc["condition"],
            language=doc["language"], location=doc["location"],
            acquired_on=row["created_at"].date(), actor=actor, reason="review",
            details={"capture_id": capture_id, "reasons": doc.get("reasons", [])})
        price = await pricing.latest(tx, variant["id"], doc["condition"])
        doc.update(item=stocked.as_dict(), price=price, resolved_by=actor)
        await tx.execute(
            "UPDATE captures SET status = 'processed', card_id = $2, variant_id = $3, "
            "ocr = $4, error = NULL, updated_at = now() WHERE id = $1",
            capture_id, card_id, variant["id"], doc)
        return view(one(await tx.fetchrow(SELECT_SQL + " WHERE c.id = $1", capture_id)))


MAX_REASON = 200


async def discard(ex: Executor, capture_id: int, *, reason: str, actor: str) -> dict[str, Any]:
    """The operator's other answer: this capture is no card to stock (not a card, a
    duplicate, unreadable). It leaves the queue as 'discarded'; who, when and why are
    kept in its document (`discarded`). A reason is required: it is the only record."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("say why the capture is discarded", field="reason")
    if len(reason) > MAX_REASON:
        raise ValidationError(f"at most {MAX_REASON} characters", field="reason")
    async with atomic(ex) as tx:
        row = await tx.fetchrow("SELECT status, ocr FROM captures WHERE id = $1 FOR UPDATE",
                                capture_id)
        if row is None:
            raise CaptureNotFound(f"no capture {capture_id}")
        if row["status"] != "needs_review":
            raise NotReviewable(capture_id, row["status"])
        doc = dict(row["ocr"] or {})
        at = await tx.fetchval("SELECT now()")
        doc["discarded"] = {"by": actor, "reason": reason, "at": at.isoformat()}
        await tx.execute("UPDATE captures SET status = 'discarded', ocr = $2, "
                         "updated_at = now() WHERE id = $1", capture_id, doc)
        return view(one(await tx.fetchrow(SELECT_SQL + " WHERE c.id = $1", capture_id)))
