"""Catalog routes: sets, cards, card search with the query language, identification.

Thin: each route validates its input, calls one function of `cardmint.catalog`, and
renders rows in the API's camelCase shape. A malformed query or orderBy is a 400 whose
problem names the parameter (`query.q`, `query.orderBy`) and, for q, the character position.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cardmint.api.problems import problem
from cardmint.catalog import identify as identification
from cardmint.catalog import search
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
    return request.app.state.db


def _bad_request(exc: ValidationError, location: str) -> JSONResponse:
    field = f"{location}.{exc.field}" if exc.field else location
    return problem(400, "Bad Request", str(exc), errors=[{"field": field, "message": str(exc)}])


def _list(page: search.Page, render: Any) -> dict[str, Any]:
    data = [render(row) for row in page.rows]
    return {"data": data, "page": page.page, "pageSize": page.page_size, "count": len(data),
            "totalCount": page.total_count}


# -- rendering --------------------------------------------------------------------------------

def render_set(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"],
            "series": {"id": row["series_id"], "name": row["series_name"]},
            "releaseDate": row["release_date"], "printedTotal": row["printed_total"],
            "cardCount": row["card_count"], "abbreviation": row["abbreviation"],
            "tcgOnlineCode": row["tcg_online_code"]}


def render_card(row: dict[str, Any]) -> dict[str, Any]:
    card = {
        "id": row["id"], "name": row["name"], "number": row["number"],
        "set": {"id": row["set_id"], "name": row["set_name"], "series": row["series_id"],
                "releaseDate": row["release_date"], "printedTotal": row["printed_total"]},
        "category": row["category"], "rarity": row["rarity"], "hp": row["hp"],
        "types": row["types"], "stage": row["stage"], "illustrator": row["illustrator"],
        "retreat": row["retreat"], "regulationMark": row["regulation_mark"],
        "dexIds": row["dex_ids"],
        "legal": {"standard": row["legal_standard"], "expanded": row["legal_expanded"]},
    }
    if "attacks" in row:  # the single-card view
        card.update({
            "evolveFrom": row["evolve_from"], "trainerType": row["trainer_type"],
            "energyType": row["energy_type"], "attacks": row["attacks"],
            "abilities": row["abilities"], "weaknesses": row["weaknesses"],
            "resistances": row["resistances"],
            "variants": [{"id": v["id"], "type": v["type"], "subtype": v["subtype"],
                          "size": v["size"], "stamps": v["stamps"], "foil": v["foil"],
                          "tcgplayerProductId": v["tcgplayer_product_id"],
                          "cardmarketId": v["cardmarket_id"]} for v in row["variants"]],
        })
    return card


def render_candidate(c: identification.Candidate) -> dict[str, Any]:
    evidence = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v
                for k, v in c.evidence.items()}
    return {"cardId": c.card_id, "name": c.name, "setId": c.set_id, "setName": c.set_name,
            "number": c.number, "confidence": c.confidence, "evidence": evidence}


# -- routes -----------------------------------------------------------------------------------

@router.get("/sets")
async def list_sets(request: Request, page: int = _page(),
                    page_size: int = Query(search.MAX_PAGE_SIZE, alias="pageSize", ge=1,
                                           le=search.MAX_PAGE_SIZE)) -> dict[str, Any]:
    """Every set, in release order."""
    return _list(await search.list_sets(_db(request), page=page, page_size=page_size),
                 render_set)


@router.get("/sets/{set_id}")
async def get_set(request: Request, set_id: str = _id_path()) -> dict[str, Any]:
    row = await search.get_set(_db(request), set_id)
    if row is None:
        raise HTTPException(404, f"no set {set_id!r}")
    return {"data": render_set(row)}


@router.get("/cards")
async def search_cards(
    request: Request,
    q: str | None = Query(None, max_length=MAX_LENGTH,
                          description="Query, e.g. `charizard set:base1 hp:[100 TO *]`"),
    order_by: str | None = Query(None, alias="orderBy", max_length=100,
                                 description="Comma-separated keys, `-` for descending"),
    page: int = _page(),
    page_size: int = Query(50, alias="pageSize", ge=1, le=search.MAX_PAGE_SIZE),
) -> Any:
    """Cards matching a query, one page at a time."""
    try:
        result = await search.search_cards(_db(request), q, order_by=order_by, page=page,
                                           page_size=page_size)
    except ValidationError as exc:
        return _bad_request(exc, "query")
    return _list(result, render_card)


@router.get("/cards/{card_id}")
async def get_card(request: Request, card_id: str = _id_path()) -> dict[str, Any]:
    """One card with its game text and variants."""
    row = await search.get_card(_db(request), card_id)
    if row is None:
        raise HTTPException(404, f"no card {card_id!r}")
    return {"data": render_card(row)}


class IdentifyRequest(BaseModel):
    """What OCR read off one card; at least a name, a number or some text."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, max_length=identification.MAX_NAME,
                             description="The name line")
    number: str | None = Field(None, max_length=identification.MAX_NUMBER,
                               description="As printed: 4/102, TG05/TG30, SV001")
    set_code: str | None = Field(None, alias="setCode", max_length=identification.MAX_NUMBER,
                                 description="TCGdex set id or printed abbreviation")
    hp: int | str | None = Field(None, description="HP as read: 120, or '12O'")
    text: str | None = Field(None, max_length=identification.MAX_TEXT,
                             description="Any other text read")
    limit: int = Field(identification.DEFAULT_LIMIT, ge=1, le=identification.MAX_LIMIT)

    @field_validator("hp")
    @classmethod
    def _hp_bounded(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 0 <= value <= 9999:
            raise ValueError("must be between 0 and 9999")
        if isinstance(value, str) and len(value) > 8:
            raise ValueError("at most 8 characters")
        return value

    @model_validator(mode="after")
    def _something_to_go_on(self) -> IdentifyRequest:
        if not any(v and v.strip() for v in (self.name, self.number, self.text)):
            raise ValueError("give at least one of name, number or text")
        return self


@router.post("/identify")
async def identify(request: Request, body: IdentifyRequest) -> Any:
    """Ranked catalog candidates for what OCR read, each with a confidence in [0, 1]."""
    ocr = identification.OcrInput(name=body.name, number=body.number, set_code=body.set_code,
                                  hp=body.hp, text=body.text)
    try:
        candidates = await identification.identify(_db(request), ocr, limit=body.limit)
    except ValidationError as exc:
        return _bad_request(exc, "body")
    return {"data": [render_candidate(c) for c in candidates], "count": len(candidates)}
