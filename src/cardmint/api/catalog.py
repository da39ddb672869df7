"""Catalog routes: sets, cards, card search with the query language, identification.

Thin: each route validates its input, calls one function of `cardmint.catalog`, and
answers with a model of `api.models.catalog` built from the rows. A malformed query or
orderBy is a 400 whose problem names the parameter (`query.q`, `query.orderBy`) and, for
q, the character position.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cardmint.api.models.base import OcrHp
from cardmint.api.models.catalog import (
    Candidate,
    Candidates,
    Card,
    CardList,
    CardSummary,
    OneCard,
    OneSet,
    SetInfo,
    SetList,
)
from cardmint.api.problems import Refused, responses
from cardmint.catalog import identify as identification
from cardmint.catalog import search
from cardmint.catalog.cache import VERSION_SQL, CatalogCache, Loaded
from cardmint.catalog.query import MAX_LENGTH
from cardmint.db import Database
from cardmint.errors import ValidationError

router = APIRouter(prefix="/v1", tags=["catalog"])


# FastAPI binds a parameter object to the route that declares it: one per route.
def _id_path() -> Any:
    return Path(..., min_length=1, max_length=64)


def _page() -> Any:
    return Query(1, ge=1, le=search.MAX_PAGE)


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _cache(request: Request) -> CatalogCache:
    cache: CatalogCache = request.app.state.catalog_cache
    return cache


def _json(body: bytes) -> Response:
    """A cached answer as is: the same bytes FastAPI's own serialisation of the model
    makes (pydantic's dump_json, by alias), built once per catalog version."""
    return Response(body, media_type="application/json")


def _bad_request(exc: ValidationError, location: str) -> Refused:
    return Refused(400, str(exc), f"{location}.{exc.field}" if exc.field else location)


# -- routes -----------------------------------------------------------------------------------

@router.get("/sets", response_model=SetList, responses=responses(400, 422, 503))
async def list_sets(request: Request, page: int = _page(),
                    page_size: int = Query(search.MAX_PAGE_SIZE, alias="pageSize", ge=1,
                                           le=search.MAX_PAGE_SIZE)) -> Response:
    """Every set, in release order."""
    async def load(stale_ok: bool) -> Loaded:
        result = await search.list_sets(_db(request), page=page, page_size=page_size,
                                        stale_ok=stale_ok)
        return SetList.of([SetInfo.from_row(r) for r in result.rows], page=result.page,
                          page_size=result.page_size, total_count=result.total_count
                          ).model_dump_json(by_alias=True).encode(), result.catalog_version

    return _json(await _cache(request).get(("sets", page, page_size), load) or b"")


@router.get("/sets/{set_id}", response_model=OneSet,
            responses=responses(400, 404, 422, 503))
async def get_set(request: Request, set_id: str = _id_path()) -> OneSet:
    row = await search.get_set(_db(request), set_id)
    if row is None:
        raise HTTPException(404, f"no set {set_id!r}")
    return OneSet(data=SetInfo.from_row(row))


@router.get("/cards", response_model=CardList, responses=responses(400, 422, 503))
async def search_cards(
    request: Request,
    q: str | None = Query(None, max_length=MAX_LENGTH,
                          description="Query, e.g. `charizard set:base1 hp:[100 TO *]`"),
    order_by: str | None = Query(None, alias="orderBy", max_length=100,
                                 description="Comma-separated keys, `-` for descending"),
    page: int = _page(),
    page_size: int = Query(50, alias="pageSize", ge=1, le=search.MAX_PAGE_SIZE),
) -> Response:
    """Cards matching a query, one page at a time."""
    async def load(stale_ok: bool) -> Loaded:
        result = await search.search_cards(_db(request), q, order_by=order_by, page=page,
                                           page_size=page_size, stale_ok=stale_ok)
        body = CardList.of([CardSummary.fields_of(r) for r in result.rows], page=result.page,
                           page_size=result.page_size, total_count=result.total_count)
        body.hints = result.hints
        return body.model_dump_json(by_alias=True).encode(), result.catalog_version

    try:
        found = await _cache(request).get(("cards", q, order_by, page, page_size), load)
    except ValidationError as exc:
        raise _bad_request(exc, "query") from exc
    return _json(found or b"")


@router.get("/cards/{card_id}", response_model=OneCard,
            responses=responses(400, 404, 422, 503))
async def get_card(request: Request, card_id: str = _id_path()) -> Response:
    """One card with its game text and variants."""
    async def load(stale_ok: bool) -> Loaded:
        row = await search.get_card(_db(request), card_id, stale_ok=stale_ok)
        if row is None:
            return None
        return (OneCard(data=Card.from_row(row)).model_dump_json(by_alias=True).encode(),
                row["catalog_version"])

    found = await _cache(request).get(("card", card_id), load)
    if found is None:
        raise HTTPException(404, f"no card {card_id!r}")
    return _json(found)


class IdentifyRequest(BaseModel):
    """What OCR read off one card; at least a name, a number or some text. Not a `Model`:
    nothing here is stored or shown, and OCR output is what it is (the reading drops
    what the database could not take); HP is a number or text, never a boolean."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, max_length=identification.MAX_NAME,
                             description="The name line")
    number: str | None = Field(None, max_length=identification.MAX_NUMBER,
                               description="As printed: 4/102, TG05/TG30, SV001")
    set_code: str | None = Field(None, alias="setCode", max_length=identification.MAX_NUMBER,
                                 description="TCGdex set id or printed abbreviation")
    hp: OcrHp = Field(None, description="HP as read: 120, or '12O'")
    text: str | None = Field(None, max_length=identification.MAX_TEXT,
                             description="Any other text read")
    limit: int = Field(identification.DEFAULT_LIMIT, ge=1, le=identification.MAX_LIMIT)

    @model_validator(mode="after")
    def _something_to_go_on(self) -> IdentifyRequest:
        if not any(v and v.strip() for v in (self.name, self.number, self.text)):
            raise ValueError("give at least one of name, number or text")
        return self


@router.post("/identify", response_model=Candidates, responses=responses(400, 413, 422, 503))
async def identify(request: Request, body: IdentifyRequest) -> Response:
    """Ranked catalog candidates for what OCR read, each with a confidence in [0, 1]."""
    db = _db(request)
    ocr = identification.OcrInput(name=body.name, number=body.number, set_code=body.set_code,
                                  hp=body.hp, text=body.text)

    async def load(_stale_ok: bool) -> Loaded:
        # On the primary, the catalog's version first: every statement after it reads that
        # load or a later one, so the answer is never older than the version it is kept
        # under (identification reads in several statements; replicas could differ).
        version = await db.fetchval(VERSION_SQL)
        candidates = await identification.identify(db, ocr, limit=body.limit,
                                                   stale_ok=False)
        return (Candidates(data=[Candidate.of(c) for c in candidates], count=len(candidates)
                           ).model_dump_json(by_alias=True).encode(), int(version))

    key = ("identify", body.name, body.number, body.set_code, body.hp, body.text, body.limit)
    try:
        found = await _cache(request).get(key, load)
    except ValidationError as exc:
        raise _bad_request(exc, "body") from exc
    return _json(found or b"")
