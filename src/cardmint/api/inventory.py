"""Inventory routes: items (add, read, update with If-Match, reserve/release/sell/remove),
their ledger, the list with filters, the collection's market value, CSV import/export.

Thin over `cardmint.inventory`. Reads need the read scope, writes the write scope; every
POST is idempotent (Idempotency-Key). An item's ETag is its version: PATCH requires
If-Match (428 without, 412 when stale); the status actions check it when it is sent.
"""

from __future__ import annotations

import codecs
import io
import json
import tempfile
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from cardmint import inputs
from cardmint.api.auth import Principal, require_scope
from cardmint.api.idempotency import fingerprint_of
from cardmint.api.inventory_common import write
from cardmint.api.models.base import Condition, Model
from cardmint.api.models.interchange import FileImport, OneFileImport
from cardmint.api.models.inventory import (
    Grader,
    Item,
    ItemList,
    Ledger,
    LedgerEntry,
    OneItem,
    OneValue,
    Status,
    Value,
)
from cardmint.api.problems import AUTH, Refused, responses
from cardmint.db import Database, Transaction
from cardmint.intake import imports
from cardmint.inventory import items, ledger
from cardmint.inventory.fields import MAX_CENTS
from cardmint.inventory.interchange import exports, importer, layouts
from cardmint.inventory.products import VariantRef

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])

Action = Literal["reserve", "release", "sell", "remove"]
LANGUAGE = r"^[a-z]{2}(-[a-z]{2,4})?$"
MAX_ID = 2**63 - 1
MAX_PAGE_SIZE, MAX_PAGE = 250, 10_000
ETAG = {"ETag": {"description": "The item's version, for If-Match",
                 "schema": {"type": "string"}}}
LOCATION = {"Location": {"description": "The item's URL", "schema": {"type": "string"}}}
Location = Field(None, min_length=1, max_length=100)


class AddItem(Model):
    """A physical card: its printing (variantId, or cardId and variantType with the parts
    that tell its printings apart; an ambiguous one is refused with the choices) and
    details."""

    variant_id: int | None = Field(None, alias="variantId", ge=1, le=MAX_ID)
    card_id: str | None = Field(None, alias="cardId", min_length=1, max_length=64)
    variant_type: str | None = Field(None, alias="variantType", min_length=1, max_length=64)
    variant_subtype: str | None = Field(None, alias="variantSubtype", min_length=1,
                                        max_length=64)
    variant_foil: str | None = Field(None, alias="variantFoil", min_length=1, max_length=64)
    variant_stamps: list[str] | None = Field(None, alias="variantStamps", max_length=8)
    variant_size: str | None = Field(None, alias="variantSize", min_length=1, max_length=64)
    condition: Condition = "NM"
    language: str = Field("en", pattern=LANGUAGE, max_length=10)
    location: str | None = Location
    acquisition_cost_cents: int | None = Field(None, alias="acquisitionCostCents", ge=0,
                                               le=MAX_CENTS)
    acquired_on: date | None = Field(None, alias="acquiredOn")
    grading_company: Grader | None = Field(None, alias="gradingCompany")
    grade: Decimal | None = Field(None, ge=1, le=10, max_digits=3, decimal_places=1)
    cert_number: str | None = Field(None, alias="certNumber", min_length=1, max_length=32)
    reason: str | None = Field(None, max_length=200)


class UpdateItem(Model):
    """Fields to change; those left out stay as they are (null clears an optional one)."""

    location: str | None = Location
    acquisition_cost_cents: int | None = Field(None, alias="acquisitionCostCents", ge=0,
                                               le=MAX_CENTS)
    acquired_on: date | None = Field(None, alias="acquiredOn")
    grading_company: Grader | None = Field(None, alias="gradingCompany")
    grade: Decimal | None = Field(None, ge=1, le=10, max_digits=3, decimal_places=1)
    cert_number: str | None = Field(None, alias="certNumber", min_length=1, max_length=32)
    condition: Condition | None = None
    language: str | None = Field(None, pattern=LANGUAGE, max_length=10)
    reason: str | None = Field(None, max_length=200)


class ChangeStatus(Model):
    amount_cents: int | None = Field(None, alias="amountCents", ge=0, le=MAX_CENTS,
                                     description="The sale's amount (sell only, required)")
    reason: str | None = Field(None, max_length=200)


# -- helpers --------------------------------------------------------------------------------

def etag(version: int) -> str:
    return f'"{version}"'


def _with_etag(response: JSONResponse, version: int | None) -> JSONResponse:
    if version is not None and response.status_code < 300:
        response.headers["ETag"] = etag(version)
    return response


def if_match(value: str | None, *, required: bool) -> int | None:
    """The version an If-Match names: `"3"` (or bare 3). Weak tags and `*` cannot name a
    version, so they are refused rather than taken as "any"."""
    if value is None:
        if required:
            raise Refused(428, "this change needs If-Match: the item's ETag from a GET",
                          "header.If-Match")
        return None
    tag = value.strip()
    if tag.startswith('"') and tag.endswith('"') and len(tag) >= 2:
        tag = tag[1:-1]
    version = inputs.whole(tag, minimum=1, maximum=2**31 - 1)
    if version is None:
        raise Refused(400, 'If-Match must be the item\'s ETag, e.g. "3"', "header.If-Match")
    return version


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _item_id() -> Any:
    return Path(..., ge=1, le=MAX_ID)


def _filters(set_id: str | None, card_id: str | None, condition: str | None,
             status: str | None, location: str | None, graded: bool | None) -> items.Filters:
    return items.Filters(set_id=set_id, card_id=card_id, condition=condition, status=status,
                         location=location, graded=graded)


SetQ = Query(None, alias="set", min_length=1, max_length=64)
CardQ = Query(None, alias="card", min_length=1, max_length=64)
LocationQ = Query(None, min_length=1, max_length=100)


# -- items ------------------------------------------------------------------------------------

@router.post("/items", status_code=201, response_model=OneItem, responses={
    201: {"headers": {**LOCATION, **ETAG}}, **responses(400, 409, 413, 422, 503, *AUTH)})
async def add_item(request: Request, body: AddItem,
                   who: Principal = Depends(require_scope("write"))) -> Response:
    """Add one physical card (status IN_STOCK); its ledger row says who and when."""
    new = items.NewItem(
        variant=VariantRef(variant_id=body.variant_id, card_id=body.card_id,
                           type=body.variant_type, subtype=body.variant_subtype,
                           foil=body.variant_foil, size=body.variant_size,
                           stamps=tuple(body.variant_stamps)
                           if body.variant_stamps is not None else None),
        condition=body.condition, language=body.language, location=body.location,
        acquisition_cost_cents=body.acquisition_cost_cents, acquired_on=body.acquired_on,
        grading_company=body.grading_company, grade=body.grade, cert_number=body.cert_number)

    async def work(tx: Transaction) -> tuple[int, OneItem]:
        row = await items.add(tx, new, actor=who.owner, reason=body.reason)
        return 201, OneItem(data=Item.of(await items.require(tx, row["id"])))

    response = await write(request, who, work)
    if response.status_code == 201:
        data = _body(response)["data"]
        response.headers["Location"] = f"/v1/inventory/items/{data['id']}"
        _with_etag(response, data["version"])
    return response


@router.get("/items/{item_id}", response_model=OneItem, responses={
    200: {"headers": ETAG}, **responses(400, 404, 503, *AUTH)})
async def get_item(request: Request, response: Response, item_id: int = _item_id(),
                   _: Principal = Depends(require_scope("read"))) -> OneItem:
    """One item, with its ETag (the version PATCH and the status actions expect)."""
    item = await items.get(_db(request), item_id)
    if item is None:
        raise Refused(404, f"no item {item_id}")
    response.headers["ETag"] = etag(item["version"])
    return OneItem(data=Item.of(item))


@router.patch("/items/{item_id}", response_model=OneItem, responses={
    200: {"headers": ETAG}, **responses(400, 404, 409, 412, 413, 422, 428, 503, *AUTH)})
async def update_item(request: Request, body: UpdateItem, item_id: int = _item_id(),
                      match: str | None = Header(None, alias="If-Match", max_length=64),
                      who: Principal = Depends(require_scope("write"))) -> Response:
    """Change fields or move the item; needs If-Match with its current ETag."""
    version = if_match(match, required=True)
    changes = body.model_dump(exclude_unset=True, exclude={"reason"})
    for key in ("condition", "language"):  # required columns: null means "leave it"
        if changes.get(key, "") is None:
            del changes[key]

    async def work(tx: Transaction) -> tuple[int, OneItem]:
        await items.update(tx, item_id, version=version or 0, changes=changes,
                           actor=who.owner, reason=body.reason)
        return 200, OneItem(data=Item.of(await items.require(tx, item_id)))

    response = await write(request, who, work, idempotent_post=False)
    return _with_etag(response, _version(response))


@router.post("/items/{item_id}/{action}", response_model=OneItem, responses={
    200: {"headers": ETAG}, **responses(400, 404, 409, 412, 413, 422, 503, *AUTH)})
async def change_status(request: Request, action: Action, item_id: int = _item_id(),
                        body: ChangeStatus | None = None,
                        match: str | None = Header(None, alias="If-Match", max_length=64),
                        who: Principal = Depends(require_scope("write"))) -> Response:
    """reserve (IN_STOCK→RESERVED), release (RESERVED→IN_STOCK), sell (IN_STOCK or
    RESERVED→SOLD, with amountCents), remove (IN_STOCK or RESERVED→REMOVED). If-Match,
    when sent, must name the current version (412 otherwise); 409 if not allowed."""
    body = body or ChangeStatus()
    version = if_match(match, required=False)
    if action == "sell" and body.amount_cents is None:
        raise Refused(422, "a sale needs its amount", "body.amountCents")
    if action != "sell" and body.amount_cents is not None:
        raise Refused(422, "only a sale has an amount", "body.amountCents")

    async def work(tx: Transaction) -> tuple[int, OneItem]:
        await items.transition(tx, item_id, action, version=version, actor=who.owner,
                               amount_cents=body.amount_cents, reason=body.reason)
        return 200, OneItem(data=Item.of(await items.require(tx, item_id)))

    response = await write(request, who, work)
    return _with_etag(response, _version(response))


@router.get("/items", response_model=ItemList, responses=responses(400, 422, 503, *AUTH))
@router.get("", summary="List Items (alias of /v1/inventory/items)", response_model=ItemList,
            responses=responses(400, 422, 503, *AUTH))
async def list_items(
    request: Request, set_id: str | None = SetQ, card_id: str | None = CardQ,
    condition: Condition | None = None, status: Status | None = None,
    location: str | None = LocationQ, graded: bool | None = None,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    page_size: int = Query(50, alias="pageSize", ge=1, le=MAX_PAGE_SIZE),
    after: int | None = Query(None, ge=0, le=2**63 - 1, description=(
        "Keyset paging: the items after this item id (the last id of the previous "
        "page); pages stay as fast however deep. Not with page.")),
    _: Principal = Depends(require_scope("read")),
) -> ItemList:
    """Items, oldest first, filtered by set, card, condition, status, location, graded."""
    if after is not None and page != 1:
        raise Refused(400, "give page or after, not both", "query.after")
    rows, total = await items.listing(
        _db(request), _filters(set_id, card_id, condition, status, location, graded),
        page=page, page_size=page_size, after=after)
    return ItemList.of([Item.of(r) for r in rows], page=page, page_size=page_size,
                       total_count=total)


@router.get("/items/{item_id}/ledger", response_model=Ledger,
            responses=responses(400, 404, 503, *AUTH))
async def item_ledger(request: Request, item_id: int = _item_id(),
                      _: Principal = Depends(require_scope("read"))) -> Ledger:
    """Every change of the item, oldest first: who, when, what, before and after."""
    db = _db(request)
    if await items.get(db, item_id) is None:
        raise Refused(404, f"no item {item_id}")
    entries = [LedgerEntry.of(e) for e in await ledger.history(db, item_id)]
    return Ledger(data=entries, count=len(entries))


@router.get("/value", response_model=OneValue, responses=responses(400, 422, 503, *AUTH))
async def collection_value(
    request: Request, set_id: str | None = SetQ, card_id: str | None = CardQ,
    condition: Condition | None = None, status: Status | None = None,
    location: str | None = LocationQ, graded: bool | None = None,
    _: Principal = Depends(require_scope("read")),
) -> OneValue:
    """Market value of the items held (IN_STOCK and RESERVED unless status says), each at
    the latest USD price of its variant and condition; `unpriced` counts the rest."""
    v = await items.value(_db(request),
                          _filters(set_id, card_id, condition, status, location, graded))
    return OneValue(data=Value.model_validate(v))


# -- files: TCGplayer, Collectr, Dragon Shield -------------------------------------------------

IMPORT_PATH = "/v1/inventory/import"
FormatQ = Query(None, description="tcgplayer, tcgplayer-app, collectr or dragonshield; "
                "by default the file's header decides")


@router.get("/export", response_class=Response, responses={
    200: {"description": "The file (Content-Disposition: attachment)",
          "content": {"text/csv": {"schema": {"type": "string"}}}},
    **responses(400, 422, 503, *AUTH)})
async def export_csv(request: Request,
                     format: Literal["tcgplayer", "collectr", "dragonshield"] = Query(...),
                     location: str | None = LocationQ, set_id: str | None = SetQ,
                     _: Principal = Depends(require_scope("read"))) -> Response:
    """The items in stock as a TCGplayer upload file (SKU ids, Add to Quantity, TCG
    Marketplace Price), a Collectr file or a Dragon Shield file."""
    chunks = await exports.export(_db(request), format,
                                  items.Filters(location=location, set_id=set_id))
    return StreamingResponse(iter(chunks), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="cardmint-{format}.csv"'})


@router.get("/import/template", response_class=Response, responses={
    200: {"description": "The layout's header row, to fill in",
          "content": {"text/csv": {"schema": {"type": "string"}}}},
    **responses(400, 422, 503, *AUTH)})
async def import_template(
        format: Literal["tcgplayer", "tcgplayer-app", "collectr", "dragonshield"] = Query(...),
        _: Principal = Depends(require_scope("read"))) -> Response:
    """An empty file in the layout: its header (and Dragon Shield's sep line)."""
    return Response(exports.template(format), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{format}-template.csv"'})


@router.post("/import", response_model=OneFileImport,
             responses=responses(400, 413, 422, 503, *AUTH), openapi_extra={
    "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_csv(
        request: Request, format: str | None = FormatQ,
        mode: Literal["add", "sync"] = Query("add", description="add: every row adds its "
                                             "copies; sync: the file states the counts"),
        dry_run: bool = Query(False, alias="dryRun", description="Report, change nothing"),
        dry_run_snake: bool = Query(False, alias="dry_run", include_in_schema=False),
        prune: bool = Query(False, description="sync: remove what the file does not name"),
        review: bool = Query(False, description="Unmatched rows go to the review queue"),
        location: str | None = LocationQ,
        who: Principal = Depends(require_scope("write"))) -> Response:
    """Import a file in any of the four layouts (chosen by its header). Every row is
    answered: matched (card, printing, what the import does) or why not; a row that cannot
    be matched never fails the file. `location` puts every item there and bounds what
    `sync` compares (else Collectr's portfolio or Dragon Shield's folder is the location).
    At most CARDMINT_API_MAX_IMPORT_BYTES of CSV (64 MiB by default)."""
    spool, fingerprint = await spooled_text(request)
    if format is not None and format not in layouts.FORMATS:
        raise Refused(400, f"format must be one of {', '.join(layouts.FORMATS)}", "format")

    async def work(tx: Transaction) -> tuple[int, OneFileImport]:
        rows = layouts.Reader(spool, format, location)
        report = await importer.run(tx, rows, mode=mode, actor=who.owner,
                                    dry_run=dry_run or dry_run_snake, prune=prune,
                                    review=review, scope_location=location)
        captures: dict[int, int] = {}
        if review and not report.dry_run:
            captures = await imports.send_to_review(tx, report, report.review,
                                                    submitter=who.owner)
        return 200, OneFileImport(data=FileImport.of(report, captures))

    try:
        return await write(request, who, work, fingerprint=fingerprint)
    finally:
        spool.close()


async def spooled_text(request: Request) -> tuple[io.TextIOWrapper, bytes]:
    """The body in a temporary file (memory up to 1 MiB, then disk), checked to be UTF-8
    as it arrives, read back as text: a large file never sits in memory whole. With it,
    the request's fingerprint for an Idempotency-Key (hashed as the body streams by)."""
    raw = tempfile.SpooledTemporaryFile(max_size=1 << 20)
    decoder = codecs.getincrementaldecoder("utf-8")()
    hasher = fingerprint_of(request)
    try:
        async for chunk in request.stream():
            decoder.decode(chunk)
            hasher.update(chunk)
            raw.write(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raw.close()
        raise Refused(400, "the CSV must be UTF-8", "body") from exc
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), hasher.digest()


def _body(response: JSONResponse) -> Any:
    return json.loads(bytes(response.body))


def _version(response: JSONResponse) -> int | None:
    if response.status_code >= 300:
        return None
    version: int = _body(response)["data"]["version"]
    return version

