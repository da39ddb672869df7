"""Adding without card ids: search-as-you-type suggestions for the add page (over the
catalog's query language, so "charizard set:base1" works as in the catalog), and a bulk
add of many lines at once.

A bulk line is `[QUANTITY] CARD [#PRINTING]`: CARD is a catalog id (`base1-4`) or a
search that finds exactly one card (`pikachu set:base1 number:58`); #PRINTING a variant
id, needed only when the card has more than one printing (the refusal lists them: a
printing is never guessed). Every line is checked first; nothing is written unless all
are good, then all are, in one transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cardmint import inputs
from cardmint.catalog import images, search
from cardmint.db import Database
from cardmint.errors import ValidationError
from cardmint.inventory import fields, items
from cardmint.inventory.products import VariantRef, describe
from cardmint.web.forms import CONDITION_NAMES, read_form
from cardmint.web.render import render
from cardmint.web.session import Session, check_csrf, require_page

router = APIRouter(include_in_schema=False)

SUGGESTIONS = 8
MAX_QUANTITY = 100
MAX_LINES = 200
LINE = re.compile(r"^\s*(?:(\d{1,3})\s*[x×]?\s+)?(.+?)(?:\s+#(\d{1,18}))?\s*$")


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def label(card: dict[str, object]) -> str:
    total = f"/{card['printed_total']}" if card.get("printed_total") else ""
    return f"{card['name']} · {card['set_name']} {card['number']}{total}"


async def matches(db: Database, q: str, limit: int) -> search.Page:
    """Cards for what was typed: best match first (the query language's fuzzy words)."""
    return await search.search_cards(db, q, page_size=limit)


@router.get("/inventory/add/suggest")
async def suggest(request: Request, q: str = "",
                  session: Session = Depends(require_page("write"))) -> Response:
    """JSON for the add page's suggestions: [{id, label, image}] and hints."""
    q = q.strip()
    if not q or len(q) > 200:
        return JSONResponse({"cards": [], "hints": []})
    try:
        page = await matches(_db(request), q, SUGGESTIONS)
    except ValidationError as exc:
        return JSONResponse({"cards": [], "hints": [str(exc)]})
    remote = getattr(getattr(request.app.state, "settings", None), "remote_images", True)
    return JSONResponse({"cards": [
        {"id": c["id"], "label": label(c),
         "image": images.image_url(c["set_id"], c["number"]) if remote else None}
        for c in page.rows], "hints": page.hints})


@dataclass
class Line:
    number: int
    quantity: int
    card_id: str
    variant_id: int
    text: str


async def _resolve_line(db: Database, number: int, text: str) -> Line:
    found = LINE.match(text)
    if found is None:
        raise ValidationError("write a quantity, then a card id or a search", field="lines")
    quantity = inputs.whole(found.group(1) or "1", minimum=1, maximum=MAX_QUANTITY)
    if quantity is None:
        raise ValidationError(f"a quantity is 1 to {MAX_QUANTITY}", field="lines")
    what, printing = found.group(2).strip(), found.group(3)
    card = await search.get_card(db, what) if len(what) <= 64 else None
    if card is None:
        page = await matches(db, what, 4)
        if page.total_count != 1:
            shown = "; ".join(f"{label(c)} ({c['id']})" for c in page.rows[:3])
            why = (f"{page.total_count} cards match: {shown}; narrow it or use the id"
                   if page.total_count else "no card matches" +
                   (f" ({' '.join(page.hints)})" if page.hints else ""))
            raise ValidationError(why, field="lines")
        card = await search.get_card(db, page.rows[0]["id"])
        if card is None:  # the catalog changed under us
            raise ValidationError("no card matches", field="lines")
    variants = card["variants"]
    if printing is not None:
        chosen = next((v for v in variants if str(v["id"]) == printing), None)
        if chosen is None:
            raise ValidationError(f"#{printing} is not a printing of {card['id']}",
                                  field="lines")
    elif len(variants) == 1:
        chosen = variants[0]
    else:
        listed = "; ".join(f"#{v['id']} {describe(v)}" for v in variants)
        raise ValidationError(f"{card['id']} has {len(variants)} printings, add one: "
                              f"{listed}", field="lines")
    return Line(number, quantity, card["id"], chosen["id"], text.strip())


@router.post("/inventory/add/bulk")
async def bulk_add(request: Request,
                   session: Session = Depends(require_page("write"))) -> Response:
    form = await read_form(request, multiline=("lines",))
    check_csrf(session, form.get("csrf"))
    db = _db(request)
    texts = [t for t in form.get("lines", "").splitlines()]
    numbered = [(i, t) for i, t in enumerate(texts, 1) if t.strip()]
    errors: list[str] = []
    lines: list[Line] = []
    if not numbered:
        errors.append("Write at least one line.")
    if len(numbered) > MAX_LINES:
        errors.append(f"At most {MAX_LINES} lines at once.")
        numbered = []
    try:
        condition = fields.condition(form.get("condition") or "NM")
        location = fields.text(form.get("location", "").strip() or None, "location")
    except ValidationError as exc:
        errors.append(f"{(exc.field or 'form').capitalize()}: {exc}")
        condition, location = "NM", None
    for number, text in numbered:
        try:
            lines.append(await _resolve_line(db, number, text))
        except ValidationError as exc:
            errors.append(f"Line {number} ({text.strip()[:60]}): {exc}")
    if errors:  # every problem at once, nothing written
        return render(request, "bulk_result.html", status_code=422, errors=errors,
                      form=form, condition_options=CONDITION_NAMES, added=[])
    added: list[int] = []
    async with db.transaction() as tx:
        for line in lines:
            for _ in range(line.quantity):
                row = await items.add(tx, items.NewItem(
                    variant=VariantRef(variant_id=line.variant_id, card_id=line.card_id),
                    condition=condition, language="en", location=location),
                    actor=session.principal.owner, reason="bulk add")
                added.append(row["id"])
    first, last = added[0], added[-1]
    return RedirectResponse(f"/inventory/add?added={len(added)}&first={first}&last={last}",
                            status_code=303)


async def search_page(request: Request, q: str, form: dict[str, str]) -> HTMLResponse:
    """Step one without JavaScript: the cards a typed name finds, each a link onwards."""
    db = _db(request)
    error, page = None, None
    try:
        page = await matches(db, q, 20)
    except ValidationError as exc:
        error = str(exc)
    return render(request, "add.html", card=None, variants=[], form=form, errors={},
                  condition_options=CONDITION_NAMES, grader_options=[], q=q,
                  found=page, found_error=error, added=None)
