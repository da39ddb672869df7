"""Price routes: a bulk feed (write scope, idempotent) and a card's price history with
the latest price of each of its printings and conditions (anonymous, like the catalog)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from cardmint.api.auth import Principal, require_scope
from cardmint.api.inventory_common import Refused, write
from cardmint.api.models import Model
from cardmint.db import Database, Transaction
from cardmint.inventory import prices

router = APIRouter(prefix="/v1", tags=["prices"])
Condition = Literal["NM", "LP", "MP", "HP", "DMG"]


class PriceFeed(Model):
    """Observed prices. Each row: variantId (or cardId and variantType, with
    variantSubtype, variantFoil, variantStamps to tell printings apart), condition (NM),
    priceCents, currency (USD), source (else the feed's), observedAt (ISO 8601 with
    offset). Rows are checked one by one: bad ones are reported by index, good ones
    written together; a row already stored (same source, variant, condition and
    observedAt) is counted as a duplicate and left as it was."""

    source: str | None = Field(None, min_length=1, max_length=64,
                               description="Default source for rows without one")
    rows: list[Any] = Field(..., min_length=1, max_length=prices.MAX_ROWS)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def render(p: dict[str, Any]) -> dict[str, Any]:
    out = {"variantId": p["variant_id"], "condition": p["condition"], "source": p["source"],
           "priceCents": p["price_cents"], "currency": p["currency"],
           "observedAt": _iso(p["observed_at"])}
    if "id" in p:
        out = {"id": p["id"], "cardId": p["card_id"], **out}
    return out


@router.post("/prices")
async def post_prices(request: Request, body: PriceFeed,
                      who: Principal = Depends(require_scope("write"))) -> Any:
    """Store a batch of observed prices (up to 5,000 rows, integer cents)."""

    async def work(tx: Transaction) -> tuple[int, dict[str, Any]]:
        result = await prices.ingest(tx, body.rows, source=body.source)
        errors = [{"index": e["index"], "field": f"body.rows[{e['index']}]"
                   + (f".{e['field']}" if e["field"] else ""), "message": e["message"]}
                  for e in result.errors]
        if len(errors) == result.received:
            raise Refused(422, "no row could be stored", errors=errors)
        return 200, {"data": {"received": result.received, "inserted": result.inserted,
                              "duplicates": result.duplicates, "rejected": len(errors),
                              "errors": errors}}

    return await write(request, who, work)


@router.get("/cards/{card_id}/prices")
async def card_prices(
    request: Request, card_id: str = Path(..., min_length=1, max_length=64),
    variant_id: int | None = Query(None, alias="variantId", ge=1, le=2**63 - 1),
    condition: Condition | None = None,
    source: str | None = Query(None, min_length=1, max_length=64),
    page: int = Query(1, ge=1, le=10_000),
    page_size: int = Query(100, alias="pageSize", ge=1, le=250),
) -> Any:
    """The card's observed prices, newest first, and `latest`: the market price of each
    printing and condition (its latest USD price)."""
    db: Database = request.app.state.db
    if await db.fetchval("SELECT 1 FROM cards WHERE id = $1", card_id, stale_ok=True) is None:
        return Refused(404, f"no card {card_id!r}").response()
    rows, total = await prices.history(db, card_id, variant_id=variant_id,
                                       condition=condition, source=source, page=page,
                                       page_size=page_size)
    latest = await prices.latest_by_product(db, card_id)
    data = [render(r) for r in rows]
    return {"data": data, "page": page, "pageSize": page_size, "count": len(data),
            "totalCount": total, "latest": [render(r) for r in latest]}
