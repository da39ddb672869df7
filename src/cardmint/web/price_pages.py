"""A price entered by hand: the card's printing, the condition, the amount, and whether it
is what the shop asks (`asking`: the TCGplayer export's TCG Marketplace Price) or a market
price seen elsewhere (`manual`). Written through the price feed's own checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cardmint import inputs
from cardmint.catalog import search
from cardmint.db import Database
from cardmint.errors import ValidationError
from cardmint.inventory import fields, prices
from cardmint.inventory.prices import ASKING_SOURCE
from cardmint.inventory.products import describe
from cardmint.web.forms import CONDITION_NAMES, read_form
from cardmint.web.render import render
from cardmint.web.session import Session, check_csrf, require_page

router = APIRouter(include_in_schema=False)
KINDS = [(ASKING_SOURCE, "Our asking price (exported to TCGplayer)"),
         ("manual", "A market price seen elsewhere")]


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def _form(request: Request, card_id: str, *, status_code: int = 200,
                errors: dict[str, str] | None = None,
                shown: dict[str, str] | None = None) -> HTMLResponse:
    card = await search.get_card(_db(request), card_id) if len(card_id) <= 64 else None
    if card is None:
        return render(request, "message.html", status_code=404, heading="No such card",
                      message=f"The catalog has no card {card_id[:64]!r}.")
    return render(request, "price.html", status_code=status_code, card=card,
                  variants=[(v["id"], describe(v)) for v in card["variants"]],
                  conditions=CONDITION_NAMES, kinds=KINDS, errors=errors or {},
                  shown=shown or {})


@router.get("/cards/{card_id}/price")
async def price_form(request: Request, card_id: str,
                     session: Session = Depends(require_page("write"))) -> HTMLResponse:
    return await _form(request, card_id)


@router.post("/cards/{card_id}/price")
async def enter_price(request: Request, card_id: str,
                      session: Session = Depends(require_page("write"))) -> Response:
    form = await read_form(request)
    check_csrf(session, form.get("csrf"))
    errors: dict[str, str] = {}
    variant = inputs.whole(form.get("variantId", ""), minimum=1, maximum=2**63 - 1)
    if variant is None:
        errors["variantId"] = "choose a printing"
    source = form.get("source", "")
    if source not in dict(KINDS):
        errors["source"] = "choose what the price is"
    try:
        cents = fields.dollars(form.get("price", ""), "price")
        if cents is None:
            errors["price"] = "enter the price in dollars, e.g. 12.50"
    except ValidationError as exc:
        errors["price"] = str(exc)
        cents = None
    if errors:
        return await _form(request, card_id, status_code=422, errors=errors, shown=form)
    row: dict[str, Any] = {"cardId": card_id, "variantId": variant, "priceCents": cents,
                           "condition": form.get("condition") or "NM",
                           "observedAt": datetime.now(UTC).isoformat()}
    async with _db(request).transaction() as tx:
        done = await prices.ingest(tx, [row], source=source)
    if done.errors:
        e = done.errors[0]
        field = {"variantId": "variantId", "cardId": "variantId", "condition": "condition"}.get(
            e.get("field") or "", "price")
        return await _form(request, card_id, status_code=422,
                           errors={field: e["message"]}, shown=form)
    return RedirectResponse(f"/cards/{card_id}", status_code=303)
