"""Price routes: a bulk feed (write scope, idempotent) and a card's price history with
the latest price of each of its printings and conditions (anonymous, like the catalog)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field

from cardmint.api.auth import Principal, require_scope
from cardmint.api.inventory_common import write
from cardmint.api.models.base import Condition, Model
from cardmint.api.models.prices import CardPrices, Fed, OneFeed, RowError
from cardmint.api.models.problem import ProblemItem
from cardmint.api.problems import AUTH, Refused, responses
from cardmint.db import Database, Transaction
from cardmint.inventory import prices

router = APIRouter(prefix="/v1", tags=["prices"])


class PriceFeed(Model):
    """Observed prices. Each row: variantId (or cardId and variantType, with
    variantSubtype, variantFoil, variantStamps, variantSize (e.g. jumbo) to tell printings
    apart; an ambiguous printing is refused with the choices, never guessed), condition (NM),
    priceCents, currency (three ASCII capitals; USD), source (else the feed's),
    observedAt (ISO 8601 with offset, from 1990, at most 5 minutes ahead of the server's
    clock). A bad row refuses only itself: every row is checked, each bad one is reported
    in `errors` by index with the field and why, and the good ones are written together;
    a row already stored (same source, variant, condition and observedAt) is counted as a
    duplicate and left as it was. Only when no row at all can be stored is the answer a
    422 (listing every row)."""

    source: str | None = Field(None, min_length=1, max_length=64,
                               description="Default source for rows without one")
    rows: list[Any] = Field(..., min_length=1, max_length=prices.MAX_ROWS)


@router.post("/prices", response_model=OneFeed,
             responses=responses(400, 413, 422, 503, *AUTH))
async def post_prices(request: Request, body: PriceFeed,
                      who: Principal = Depends(require_scope("write"))) -> Response:
    """Store a batch of observed prices (up to 5,000 rows, integer cents). A bad row
    refuses only itself and is reported by index; see the body's description."""

    async def work(tx: Transaction) -> tuple[int, OneFeed]:
        result = await prices.ingest(tx, body.rows, source=body.source)
        errors = [RowError(index=e["index"], field=f"body.rows[{e['index']}]"
                           + (f".{e['field']}" if e["field"] else ""), message=e["message"])
                  for e in result.errors]
        if len(errors) == result.received:
            raise Refused(422, "no row could be stored", errors=[
                ProblemItem(index=e.index, field=e.field, message=e.message) for e in errors])
        return 200, OneFeed(data=Fed.of(result, errors))

    return await write(request, who, work)


@router.get("/cards/{card_id}/prices", response_model=CardPrices,
            responses=responses(400, 404, 422, 503))
async def card_prices(
    request: Request, card_id: str = Path(..., min_length=1, max_length=64),
    variant_id: int | None = Query(None, alias="variantId", ge=1, le=2**63 - 1),
    condition: Condition | None = None,
    source: str | None = Query(None, min_length=1, max_length=64),
    page: int = Query(1, ge=1, le=10_000),
    page_size: int = Query(100, alias="pageSize", ge=1, le=250),
) -> CardPrices:
    """The card's observed prices, newest first, and `latest`: the market price of each
    printing and condition (its latest USD price)."""
    db: Database = request.app.state.db
    if await db.fetchval("SELECT 1 FROM cards WHERE id = $1", card_id, stale_ok=True) is None:
        raise Refused(404, f"no card {card_id!r}")
    rows, total = await prices.history(db, card_id, variant_id=variant_id,
                                       condition=condition, source=source, page=page,
                                       page_size=page_size)
    latest = await prices.latest_by_product(db, card_id)
    return CardPrices(data=rows, page=page, page_size=page_size, count=len(rows),
                      total_count=total, latest=latest)
