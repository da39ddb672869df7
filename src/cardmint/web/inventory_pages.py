"""Inventory pages: the list with filters, totals and market value; one item with its
ledger; the add, move, reserve, release, sell and remove forms.

Each form calls the function the API's route calls (`cardmint.inventory.items`) in one
transaction, with the same concurrency rule: the item's version (the API's ETag) travels
in a hidden field, and a stale one is refused by `items` itself (StaleVersion), so no rule
is written twice. Refusals come back as messages next to the field they name.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cardmint import inputs
from cardmint.catalog import search
from cardmint.db import Database
from cardmint.db.values import CONDITIONS, ITEM_STATUSES
from cardmint.errors import ValidationError
from cardmint.inventory import fields, items, ledger
from cardmint.inventory.errors import NotFound, StaleVersion, TransitionNotAllowed
from cardmint.inventory.fields import GRADERS
from cardmint.inventory.products import VariantRef, describe
from cardmint.web import add_pages
from cardmint.web.forms import CONDITION_NAMES, field_of, positive_id, read_form
from cardmint.web.render import render
from cardmint.web.session import Session, check_csrf, require_page

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
MAX_PAGE = 10_000
# status changes offered on the item page (items.TRANSITIONS decides when each is allowed)
ACTIONS = {"reserve": "Reserve", "release": "Release", "sell": "Sell",
           "remove": "Remove from stock"}
GRADED = {"": "Any", "yes": "Graded", "no": "Raw"}


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


# -- the list ---------------------------------------------------------------------------------

def _filters(params: dict[str, str]) -> tuple[items.Filters, dict[str, str]]:
    """The list's filters from the query string, and a message per field it refuses."""
    errors: dict[str, str] = {}
    set_id = params.get("set", "").strip() or None
    location = params.get("location", "").strip() or None
    condition = params.get("condition") or None
    status = params.get("status") or None
    graded = params.get("graded", "")
    if set_id is not None and len(set_id) > 64:
        errors["set"] = "a set id is at most 64 characters"
    if location is not None and len(location) > fields.MAX_TEXT:
        errors["location"] = f"at most {fields.MAX_TEXT} characters"
    if condition is not None and condition not in CONDITIONS:
        errors["condition"] = f"must be one of {', '.join(CONDITIONS)}"
    if status is not None and status not in ITEM_STATUSES:
        errors["status"] = f"must be one of {', '.join(ITEM_STATUSES)}"
    if graded not in GRADED:
        errors["graded"] = "must be graded, raw or any"
    chosen = None if graded == "" else graded == "yes"
    return items.Filters(set_id=set_id, condition=condition, status=status,
                         location=location, graded=chosen), errors


@router.get("/inventory")
async def inventory_list(request: Request,
                         session: Session = Depends(require_page("read"))) -> HTMLResponse:
    params = dict(request.query_params)
    filters, errors = _filters(params)
    page = positive_id(params.get("page") or "1")
    if page is None or page > MAX_PAGE:
        errors["page"] = f"page must be a whole number from 1 to {MAX_PAGE}"
    rows: list[dict[str, Any]] = []
    total, value = 0, None
    if not errors:
        assert page is not None
        # One round: the page of items and the totals, concurrently.
        (rows, total), value = await asyncio.gather(
            items.listing(_db(request), filters, page=page, page_size=PAGE_SIZE),
            items.value(_db(request), filters))
    shown = {k: params.get(k, "") for k in ("set", "condition", "status", "location", "graded")}
    query = urlencode({k: v for k, v in shown.items() if v})
    return render(request, "inventory.html", status_code=400 if errors else 200, rows=rows,
                  total=total, value=value, page=page or 1,
                  pages=max(1, -(-total // PAGE_SIZE)), shown=shown, errors=errors,
                  query=query, conditions=CONDITIONS, statuses=ITEM_STATUSES, graded=GRADED)


# -- one item ---------------------------------------------------------------------------------

async def _item_page(request: Request, item_id: int, *, status_code: int = 200,
                     notice: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                     form: dict[str, str] | None = None) -> HTMLResponse:
    db = _db(request)
    item, history = await asyncio.gather(items.get(db, item_id), ledger.history(db, item_id))
    if item is None:
        return render(request, "message.html", status_code=404, heading="No such item",
                      message=f"There is no inventory item {item_id}.", back="/inventory")
    allowed = {a: item["status"] in items.TRANSITIONS[a][0] for a in ACTIONS}
    return render(request, "item.html", status_code=status_code, item=item, history=history,
                  allowed=allowed, actions=ACTIONS, notice=notice, errors=errors or {},
                  form=form or {})


def _parse_item(raw: str) -> int | None:
    return positive_id(raw)


@router.get("/inventory/items/{raw_id}")
async def item_page(request: Request, raw_id: str,
                    session: Session = Depends(require_page("read"))) -> HTMLResponse:
    item_id = _parse_item(raw_id)
    if item_id is None:
        return _no_item(request, raw_id)
    done = request.query_params.get("done")
    notice = {"kind": "ok", "text": DONE[done]} if done in DONE else None
    return await _item_page(request, item_id, notice=notice)


DONE = {"added": "Added to the inventory.", "moved": "Moved.", "reserve": "Reserved.",
        "release": "Released back into stock.", "sell": "Sold.",
        "remove": "Removed from stock."}
FINAL = ("sell", "remove")  # cannot be undone: confirmed on a page of their own


def _no_item(request: Request, raw: str) -> HTMLResponse:
    return render(request, "message.html", status_code=404, heading="No such item",
                  message=f"{raw[:30]!r} is not an inventory item number.", back="/inventory")


def _version(form: dict[str, str]) -> int | None:
    return inputs.whole(form.get("version", ""), minimum=1, maximum=2**31 - 1)


async def _change(request: Request, session: Session, raw_id: str, action: str) -> Response:
    """Move or change the status of an item, as the API's PATCH and status routes do."""
    item_id = _parse_item(raw_id)
    if item_id is None:
        return _no_item(request, raw_id)
    form = await read_form(request)
    check_csrf(session, form.get("csrf"))
    form["_action"] = action  # which form it was: its fields are shown again on a refusal
    errors: dict[str, str] = {}
    version = _version(form)
    if version is None:
        return await _item_page(request, item_id, status_code=400, notice={
            "kind": "error", "text": "The form did not say which version of the item you "
                                     "saw. Reload the page and try again."})
    try:
        reason = fields.text(form.get("reason"), "reason", max_length=200)
        amount = None
        if action == "sell":
            amount = fields.dollars(form.get("amount", ""), "amount")
            if amount is None:
                raise ValidationError("a sale needs its amount", field="amount")
        if action in FINAL and form.get("confirm") != "yes":
            # final and one click away: say what will happen and ask once more
            item = await items.get(_db(request), item_id)
            if item is None:
                return _no_item(request, raw_id)
            return render(request, "confirm.html", item=item, action=action,
                          label=ACTIONS[action], amount_cents=amount, reason=reason,
                          form=form)
        async with _db(request).transaction() as tx:
            if action == "move":
                await items.update(tx, item_id, version=version,
                                   changes={"location": form.get("location", "")},
                                   actor=session.principal.owner, reason=reason)
            else:
                await items.transition(tx, item_id, action, version=version,
                                       actor=session.principal.owner, amount_cents=amount,
                                       reason=reason)
    except StaleVersion as exc:
        return await _item_page(request, item_id, status_code=412, form=form, notice={
            "kind": "error", "text": f"This item changed since you opened it (it is now at "
                                     f"version {exc.current}, you saw {version}). Nothing "
                                     "was saved. Check it below and submit again."})
    except TransitionNotAllowed as exc:
        return await _item_page(request, item_id, status_code=409, notice={
            "kind": "error", "text": f"Not done: {exc}."})
    except NotFound:
        return _no_item(request, raw_id)
    except ValidationError as exc:
        errors[field_of(exc.field)] = str(exc)
        return await _item_page(request, item_id, status_code=422, errors=errors, form=form)
    done = "moved" if action == "move" else action
    return RedirectResponse(f"/inventory/items/{item_id}?done={done}", status_code=303)


@router.post("/inventory/items/{raw_id}/move")
async def move(request: Request, raw_id: str,
               session: Session = Depends(require_page("write"))) -> Response:
    return await _change(request, session, raw_id, "move")


@router.post("/inventory/items/{raw_id}/{action}")
async def change_status(request: Request, raw_id: str, action: str,
                        session: Session = Depends(require_page("write"))) -> Response:
    if action not in ACTIONS:
        return render(request, "message.html", status_code=404, heading="Not found",
                      message=f"Items cannot be {action[:20]!r}-ed here.", back="/inventory")
    return await _change(request, session, raw_id, action)


# -- adding -----------------------------------------------------------------------------------

async def _add_page(request: Request, form: dict[str, str], *, status_code: int = 200,
                    errors: dict[str, str] | None = None,
                    added: dict[str, int] | None = None) -> HTMLResponse:
    card_id = form.get("cardId", "").strip()
    card = await search.get_card(_db(request), card_id) if 0 < len(card_id) <= 64 else None
    errors = dict(errors or {})
    if card_id and card is None and "cardId" not in errors:
        errors["cardId"] = f"no card {card_id[:64]!r} in the catalog"
        status_code = max(status_code, 400) if request.method == "POST" else status_code
    variants = [(v["id"], describe(v)) for v in card["variants"]] if card else []
    return render(request, "add.html", status_code=status_code, card=card, variants=variants,
                  form=form, errors=errors, condition_options=CONDITION_NAMES,
                  grader_options=[("", "—"), *((g, g) for g in GRADERS)], q="",
                  found=None, found_error=None, added=added)


@router.get("/inventory/add")
async def add_form(request: Request,
                   session: Session = Depends(require_page("write"))) -> HTMLResponse:
    params = request.query_params
    card_id = params.get("card", "")
    form = {"cardId": card_id, "condition": "NM", "language": "en", "quantity": "1"}
    q = params.get("q", "").strip()
    if q and not card_id:  # typed a name and pressed Enter: the cards it finds
        return await add_pages.search_page(request, q[:200], form)
    count = inputs.whole(params.get("added", ""), minimum=1, maximum=10**6)
    first = inputs.whole(params.get("first", ""), minimum=1)
    last = inputs.whole(params.get("last", ""), minimum=1)
    added = {"count": count, "first": first, "last": last} if count and first and last \
        else None
    return await _add_page(request, form, added=added)


def _new_item(form: dict[str, str]) -> tuple[items.NewItem, str | None]:
    """The form as the API's NewItem: empty fields are absent; money is in dollars."""
    def opt(name: str) -> str | None:
        value = form.get(name, "").strip()
        return value or None

    card_id = fields.text(opt("cardId"), "cardId", max_length=64, required=True)
    raw_variant = opt("variantId")
    variant_id = positive_id(raw_variant) if raw_variant else None
    if raw_variant and variant_id is None:
        raise ValidationError("choose one of the card's printings", field="variantId")
    if variant_id is None:
        raise ValidationError("choose a printing", field="variantId")
    new = items.NewItem(
        variant=VariantRef(variant_id=variant_id, card_id=card_id),
        condition=form.get("condition", "NM"), language=form.get("language", "en").strip(),
        location=opt("location"),
        acquisition_cost_cents=fields.dollars(form.get("acquisitionCost", ""),
                                              "acquisitionCost"),
        acquired_on=fields.day(opt("acquiredOn"), "acquiredOn"),
        grading_company=opt("gradingCompany"), grade=opt("grade"),
        cert_number=opt("certNumber"))
    return new, fields.text(opt("reason"), "reason", max_length=200)


def _all_errors(form: dict[str, str]) -> dict[str, str]:
    """Every field's refusal at once (the domain's checks, field by field), so a person
    fixes the form in one go rather than one error per submit."""
    def opt(name: str) -> str | None:
        return form.get(name, "").strip() or None

    checks = (
        lambda: _new_item({k: v for k, v in form.items() if k in ("cardId", "variantId")}),
        lambda: fields.condition(form.get("condition", "NM")),
        lambda: fields.language(form.get("language", "en").strip()),
        lambda: fields.text(opt("location"), "location"),
        lambda: fields.dollars(form.get("acquisitionCost", ""), "acquisitionCost"),
        lambda: fields.day(opt("acquiredOn"), "acquiredOn"),
        lambda: fields.grading(opt("gradingCompany"), opt("grade"), opt("certNumber")),
        lambda: fields.text(opt("reason"), "reason", max_length=200),
    )
    errors: dict[str, str] = {}
    for run_check in checks:
        try:
            run_check()
        except ValidationError as exc:
            errors.setdefault(field_of(exc.field), str(exc))
    return errors


@router.post("/inventory/add")
async def add_submit(request: Request,
                     session: Session = Depends(require_page("write"))) -> Response:
    form = await read_form(request)
    check_csrf(session, form.get("csrf"))
    errors = _all_errors(form)
    if errors:
        return await _add_page(request, form, status_code=422, errors=errors)
    try:
        new, reason = _new_item(form)
        quantity = inputs.whole((form.get("quantity") or "1").strip(), minimum=1,
                                maximum=add_pages.MAX_QUANTITY)
        if quantity is None:
            raise ValidationError(f"a whole number from 1 to {add_pages.MAX_QUANTITY}",
                                  field="quantity")
        if quantity > 1 and new.cert_number:
            raise ValidationError("a cert number belongs to one card: add graded cards "
                                  "one at a time", field="quantity")
        async with _db(request).transaction() as tx:
            rows = [await items.add(tx, new, actor=session.principal.owner, reason=reason)
                    for _ in range(quantity)]
    except ValidationError as exc:  # Conflict (a cert number taken) is one too
        return await _add_page(request, form, status_code=422,
                               errors={field_of(exc.field): str(exc)})
    if len(rows) > 1:
        return RedirectResponse(f"/inventory/add?added={len(rows)}&first={rows[0]['id']}"
                                f"&last={rows[-1]['id']}", status_code=303)
    return RedirectResponse(f"/inventory/items/{rows[0]['id']}?done=added", status_code=303)
