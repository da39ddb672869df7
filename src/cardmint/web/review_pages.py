"""The review queue: captures the workers could not stock on their own, with the reasons
and the candidate cards; one click on a candidate resolves the capture with the same
function the API's resolve route calls (`cardmint.intake.captures.resolve`), with the
condition and location the operator set beside the candidates (the capture's own by
default)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cardmint.db import Database
from cardmint.errors import ValidationError
from cardmint.intake import captures
from cardmint.inventory import fields
from cardmint.web.forms import CONDITION_NAMES, positive_id, read_form
from cardmint.web.render import render
from cardmint.web.session import Session, check_csrf, require_page

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
MAX_PAGE = 10_000


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def _queue(request: Request, *, status_code: int = 200, notice: dict[str, str] | None
                 = None, errors: dict[int, str] | None = None) -> HTMLResponse:
    page = positive_id(request.query_params.get("page") or "1")
    if page is None or page > MAX_PAGE:
        return render(request, "message.html", status_code=400, heading="Review queue",
                      message=f"page must be a whole number from 1 to {MAX_PAGE}",
                      back="/review")
    result = await captures.review_queue(_db(request), page=page, page_size=PAGE_SIZE)
    printings = await captures.printings_of(
        _db(request), [k["card_id"] for c in result.rows for k in c["candidates"]])
    return render(request, "review.html", status_code=status_code, result=result,
                  pages=max(1, -(-result.total_count // PAGE_SIZE)), notice=notice,
                  errors=errors or {}, condition_options=CONDITION_NAMES,
                  printings=printings, discard_reasons=DISCARD_REASONS)


# what a capture in review most often turns out to be, offered first (any text will do)
DISCARD_REASONS = ("not a card", "duplicate photo", "unreadable photo", "not in the catalog")


@router.get("/review")
async def review(request: Request,
                 session: Session = Depends(require_page("read"))) -> HTMLResponse:
    notice = None
    done = positive_id(request.query_params.get("resolved"))
    item = positive_id(request.query_params.get("item"))
    discarded = positive_id(request.query_params.get("discarded"))
    if done is not None:
        text = f"Capture {done} resolved"
        notice = {"kind": "ok", "text": text + (f"; it is inventory item #{item}." if item
                                                else ".")}
    elif discarded is not None:
        notice = {"kind": "ok", "text": f"Capture {discarded} discarded; the reason is kept "
                                        "with it."}
    return await _queue(request, notice=notice)


@router.post("/review/{raw_id}/resolve")
async def resolve(request: Request, raw_id: str,
                  session: Session = Depends(require_page("write"))) -> Response:
    form = await read_form(request)
    check_csrf(session, form.get("csrf"))
    capture_id = positive_id(raw_id)
    card_id = form.get("cardId", "").strip()
    if capture_id is None:
        return await _queue(request, status_code=404, notice={
            "kind": "error", "text": f"{raw_id[:30]!r} is not a capture number."})
    if not card_id or len(card_id) > 64:
        return await _queue(request, status_code=422, errors={
            capture_id: "Card id: give the catalog id of the card this capture is."})
    try:
        # empty fields keep what the capture itself says
        location = fields.text(form.get("location"), "location", max_length=fields.MAX_TEXT)
        # the printing picked beside this candidate, if any ("" keeps the usual one)
        variant_id = positive_id(form.get(f"variant-{card_id}") or form.get("variantId") or "")
        capture = await captures.resolve(_db(request), capture_id, card_id=card_id,
                                         actor=session.principal.owner, variant_id=variant_id,
                                         condition=form.get("condition") or None,
                                         location=location)
    except captures.CaptureNotFound as exc:
        return await _queue(request, status_code=404, notice={"kind": "error",
                                                              "text": f"{exc}."})
    except captures.NotReviewable as exc:  # e.g. resolved in another tab a moment ago
        return await _queue(request, status_code=409, notice={
            "kind": "error", "text": f"Not done: {exc} (someone may have resolved it "
                                     "already)."})
    except ValidationError as exc:
        what = {"condition": "Condition", "location": "Location"}.get(exc.field or "", "Card id")
        return await _queue(request, status_code=422, errors={capture_id: f"{what}: {exc}"})
    item = (capture.get("item") or {}).get("item_id")
    suffix = f"&item={item}" if item else ""
    return RedirectResponse(f"/review?resolved={capture_id}{suffix}", status_code=303)


@router.post("/review/{raw_id}/discard")
async def discard(request: Request, raw_id: str,
                  session: Session = Depends(require_page("write"))) -> Response:
    """Discard a capture in review, with the reason (kept with the capture)."""
    form = await read_form(request)
    check_csrf(session, form.get("csrf"))
    capture_id = positive_id(raw_id)
    if capture_id is None:
        return await _queue(request, status_code=404, notice={
            "kind": "error", "text": f"{raw_id[:30]!r} is not a capture number."})
    reason = (form.get("other") or "").strip() or (form.get("reason") or "").strip()
    try:
        await captures.discard(_db(request), capture_id, reason=reason,
                               actor=session.principal.owner)
    except captures.CaptureNotFound as exc:
        return await _queue(request, status_code=404, notice={"kind": "error",
                                                              "text": f"{exc}."})
    except captures.NotReviewable as exc:
        return await _queue(request, status_code=409, notice={
            "kind": "error", "text": f"Not done: {exc} (someone may have resolved it "
                                     "already)."})
    except ValidationError as exc:
        return await _queue(request, status_code=422,
                            errors={capture_id: f"Reason: {exc}"})
    return RedirectResponse(f"/review?discarded={capture_id}", status_code=303)
