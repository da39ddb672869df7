"""Intake routes: submit a capture, read one, the review queue, resolve a review.

Thin over `cardmint.intake.captures`. Captures are private: reads need the read scope,
writes the write scope, and every POST is idempotent (Idempotency-Key). Also here:
`run_worker_in(app)`, which runs an intake worker inside the app's lifespan (`serve`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import Field, field_validator

from cardmint.api.auth import Principal, require_scope
from cardmint.api.background import run_beside
from cardmint.api.idempotency import idempotent
from cardmint.api.models.base import Condition, Model
from cardmint.api.models.intake import Capture, OneCapture, ReviewQueue
from cardmint.api.problems import AUTH, Refused, responses
from cardmint.catalog import identify as identification
from cardmint.catalog.search import MAX_PAGE, MAX_PAGE_SIZE
from cardmint.db import Database, Transaction
from cardmint.errors import ValidationError
from cardmint.intake import captures
from cardmint.intake.rules import VariantHint
from cardmint.intake.worker import Worker

router = APIRouter(prefix="/v1", tags=["intake"])
log = logging.getLogger("cardmint.api")

LANGUAGE = captures.LANGUAGE.pattern
MAX_ID = 2**63 - 1
Short = Field(None, min_length=1, max_length=64)
LOCATION = {"Location": {"description": "The capture's URL", "schema": {"type": "string"}}}
# NaN and Infinity are not JSON: jsonb would refuse them.
MetadataValue = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None


class OcrFields(Model):
    """What OCR read off the card, field by field."""

    name: str | None = Field(None, max_length=identification.MAX_NAME, description="Name line")
    number: str | None = Field(None, max_length=identification.MAX_NUMBER,
                               description="As printed: 4/102, TG05/TG30, SV001")
    set_code: str | None = Field(None, alias="setCode", max_length=identification.MAX_NUMBER)
    hp: int | str | None = Field(None, description="HP as read: 120, or '12O'")

    @field_validator("hp", mode="before")
    @classmethod
    def _hp_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise read as HP 1
            raise ValueError("must be a number or the text read")
        return value

    @field_validator("hp")
    @classmethod
    def _hp_bounded(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 0 <= value <= 9999:
            raise ValueError("must be between 0 and 9999")
        if isinstance(value, str) and len(value) > 8:
            raise ValueError("at most 8 characters")
        return value


class VariantFields(Model):
    """What the submitter knows of the printing (every given part must match)."""

    type: str | None = Short
    subtype: str | None = Short
    foil: str | None = Short
    stamps: list[str] = Field(default_factory=list, max_length=8)

    @field_validator("stamps")
    @classmethod
    def _stamps_bounded(cls, value: list[str]) -> list[str]:
        if any(not 1 <= len(s) <= 64 for s in value):
            raise ValueError("each stamp must be 1 to 64 characters")
        return value


class CaptureRequest(Model):
    """A scanned card: where its image is, what OCR read, and how to stock it."""

    MULTILINE = frozenset({"ocr_text"})

    image_ref: str = Field(..., alias="imageRef", min_length=1, max_length=2048,
                           pattern=r"^\S+$", description="Where the scan is stored (URI)")
    ocr_text: str | None = Field(None, alias="ocrText", max_length=identification.MAX_TEXT)
    ocr: OcrFields | None = None
    variant: VariantFields | None = None
    condition: Condition = "NM"
    language: str = Field("en", pattern=LANGUAGE, max_length=10)
    location: str | None = Field(None, min_length=1, max_length=100)
    priority: int = Field(100, ge=0, le=1000, description="Lower is processed first")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=32)

    @field_validator("metadata")
    @classmethod
    def _metadata_bounded(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        for key, item in value.items():
            if not 1 <= len(key) <= 64:
                raise ValueError("keys must be 1 to 64 characters")
            if isinstance(item, str) and len(item) > 500:
                raise ValueError(f"value of {key!r} is longer than 500 characters")
        return value

    def to_new(self) -> captures.NewCapture:
        o = self.ocr or OcrFields()
        v = self.variant
        return captures.NewCapture(
            image_ref=self.image_ref,
            ocr=identification.OcrInput(name=o.name, number=o.number, set_code=o.set_code,
                                        hp=o.hp, text=self.ocr_text),
            variant=VariantHint(v.type, v.subtype, v.foil, tuple(v.stamps)) if v else None,
            condition=self.condition, language=self.language, location=self.location,
            metadata=self.metadata, priority=self.priority)


class ResolveRequest(Model):
    """The operator's answer: which card (and printing) the capture is."""

    card_id: str = Field(..., alias="cardId", min_length=1, max_length=64)
    variant_id: int | None = Field(None, alias="variantId", ge=1, le=MAX_ID)
    condition: Condition | None = None
    language: str | None = Field(None, pattern=LANGUAGE, max_length=10)
    location: str | None = Field(None, min_length=1, max_length=100)


class DiscardRequest(Model):
    """Why the capture is no card to stock (kept with it)."""

    reason: str = Field(..., min_length=1, max_length=captures.MAX_REASON)


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _capture_id() -> Any:
    return Path(..., ge=1, le=MAX_ID)


def _invalid(exc: ValidationError) -> Refused:
    """A domain ValidationError as a 422 naming the body field (raised out of the
    idempotent transaction, it rolls it back)."""
    return Refused(422, str(exc), f"body.{exc.field}" if exc.field else "body")


# -- routes -----------------------------------------------------------------------------------

# A photo may be sent instead of the JSON body; `api/scan.py` takes those requests.
_PHOTO = {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP"}
UPLOAD_OPENAPI: dict[str, Any] = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": _PHOTO,
                       "condition": {"type": "string", "enum": ["NM", "LP", "MP", "HP", "DMG"]},
                       "language": {"type": "string", "pattern": LANGUAGE},
                       "location": {"type": "string", "maxLength": 100},
                       "priority": {"type": "integer", "minimum": 0, "maximum": 1000}}}},
    **{kind: {"schema": _PHOTO} for kind in ("image/jpeg", "image/png", "image/webp")},
}}}


@router.post("/captures", status_code=201, response_model=OneCapture,
             openapi_extra=UPLOAD_OPENAPI, responses={
                 201: {"headers": LOCATION}, **responses(400, 413, 415, 422, 503, *AUTH)})
async def create_capture(request: Request, body: CaptureRequest,
                         who: Principal = Depends(require_scope("write"))) -> Response:
    """Submit a scanned card; a worker identifies it (`GET` it to follow). Either what OCR
    read (JSON), or the photo (multipart with an `image` part, or the image as the body with
    condition, language, location and priority as query parameters): the worker then reads
    it. 413 above the photo size limit, 415 for another format, 422 for a photo that cannot
    be read."""
    try:
        new = body.to_new()
    except ValidationError as exc:
        raise _invalid(exc) from exc

    async def run(tx: Transaction) -> tuple[int, OneCapture]:
        capture = await captures.create(tx, new, submitter=who.owner)
        return 201, OneCapture(data=Capture.of(capture))

    response = await idempotent(request, who, run)
    if response.status_code == 201:  # on a replay too: the id comes from the stored body
        capture_id = json.loads(bytes(response.body))["data"]["id"]
        response.headers["Location"] = f"/v1/captures/{capture_id}"
    return response


@router.get("/captures/{capture_id}", response_model=OneCapture,
            responses=responses(400, 404, 503, *AUTH))
async def get_capture(request: Request, capture_id: int = _capture_id(),
                      _: Principal = Depends(require_scope("read"))) -> OneCapture:
    """One capture: its status, what processing found, its job."""
    capture = await captures.get(_db(request), capture_id)
    if capture is None:
        raise HTTPException(404, f"no capture {capture_id}")
    return OneCapture(data=Capture.of(capture))


@router.get("/review", response_model=ReviewQueue, responses=responses(400, 503, *AUTH))
async def review_queue(
    request: Request,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    page_size: int = Query(50, alias="pageSize", ge=1, le=MAX_PAGE_SIZE),
    _: Principal = Depends(require_scope("read")),
) -> ReviewQueue:
    """Captures waiting for an operator, oldest first, with reasons and candidate cards."""
    result = await captures.review_queue(_db(request), page=page, page_size=page_size)
    return ReviewQueue.of([Capture.of(c) for c in result.rows], page=result.page,
                          page_size=result.page_size, total_count=result.total_count)


@contextmanager
def _review_refusals() -> Iterator[None]:
    """What resolving or discarding a capture refuses, as the API answers it."""
    try:
        yield
    except captures.CaptureNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except captures.NotReviewable as exc:
        raise HTTPException(409, str(exc)) from exc
    except ValidationError as exc:
        raise _invalid(exc) from exc


@router.post("/captures/{capture_id}/resolve", response_model=OneCapture,
             responses=responses(400, 404, 409, 413, 422, 503, *AUTH))
async def resolve_capture(request: Request, body: ResolveRequest,
                          capture_id: int = _capture_id(),
                          who: Principal = Depends(require_scope("write"))) -> Response:
    """The operator picks the card: the capture is processed and its item created. 409 if
    the capture is not in review."""

    async def run(tx: Transaction) -> tuple[int, OneCapture]:
        with _review_refusals():
            capture = await captures.resolve(
                tx, capture_id, card_id=body.card_id, variant_id=body.variant_id,
                condition=body.condition, language=body.language, location=body.location,
                actor=who.owner)
        return 200, OneCapture(data=Capture.of(capture))

    return await idempotent(request, who, run)


@router.post("/captures/{capture_id}/discard", response_model=OneCapture,
             responses=responses(400, 404, 409, 413, 422, 503, *AUTH))
async def discard_capture(request: Request, body: DiscardRequest,
                          capture_id: int = _capture_id(),
                          who: Principal = Depends(require_scope("write"))) -> Response:
    """The operator discards a capture in review (not a card, a duplicate...): it leaves
    the queue, with who and why kept. 409 if the capture is not in review."""

    async def run(tx: Transaction) -> tuple[int, OneCapture]:
        with _review_refusals():
            capture = await captures.discard(tx, capture_id, reason=body.reason,
                                             actor=who.owner)
        return 200, OneCapture(data=Capture.of(capture))

    return await idempotent(request, who, run)


# -- the in-process worker --------------------------------------------------------------------

def run_worker_in(app: FastAPI, **options: Any) -> None:
    """Run one intake worker for as long as the app runs: it starts once the data layer
    is open and stops, finishing its job, before the database closes."""
    run_beside(app, lambda a, stop: _worker(a, stop, options))


async def _worker(app: FastAPI, stop: asyncio.Event, options: dict[str, Any]) -> None:
    db: Database = app.state.db
    while not db.is_open:  # the app opens it in the background and keeps trying
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
            return
        except TimeoutError:
            pass
    worker = Worker(db, **options)
    app.state.worker = worker
    log.info("intake worker %s started", worker.name)
    await worker.run(stop)
