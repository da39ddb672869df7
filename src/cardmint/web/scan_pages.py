"""The scan page: photos from a phone's camera (or any picture file), sent one after another,
each shown with its result as it comes back: identified and stocked, or sent to review.

`/scan` is the page. Condition and location are set once for the batch. `static/scan.js`
sends each photo as it is taken (`POST /scan/photos`, multipart with the session's CSRF
token) and follows its capture (`GET /scan/captures/{id}`, JSON) until the worker is done.
Without JavaScript the form still posts the photo and the page comes back saying it was
queued. Photos are shown through `/captures/{id}/photo`, which needs the read scope like
every page; the review queue uses it too.

The pages call `cardmint.intake.photos` and `captures`, the functions the API calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from cardmint.db import Database
from cardmint.errors import ValidationError
from cardmint.intake import captures, photos
from cardmint.inventory import fields
from cardmint.scan.images import ImageRejected
from cardmint.scan.store import ImageMissing
from cardmint.web.forms import CONDITION_NAMES, positive_id
from cardmint.web.render import render
from cardmint.web.session import Session, check_csrf, require_page

router = APIRouter(include_in_schema=False)

UPLOAD_PATH = "/scan/photos"
MAX_FILES = 10  # photos in one form sent without JavaScript
DONE = ("processed", "needs_review", "failed", "discarded")


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.get("/scan")
async def scan(request: Request,
               session: Session = Depends(require_page("write"))) -> HTMLResponse:
    sent = positive_id(request.query_params.get("sent"))
    count = positive_id(request.query_params.get("count")) or 1
    notice = None
    if sent is not None:
        what = f"capture {sent} is" if count == 1 else \
            f"{min(count, MAX_FILES)} photos from capture {sent} on are"
        notice = {"kind": "ok", "text": f"Sent: {what} queued. Each is stocked or sent to "
                                        "review once a worker has read it."}
    return render(request, "scan.html", condition_options=CONDITION_NAMES, notice=notice,
                  error=None)


def _failed(request: Request, status: int, message: str, field: str = "image") -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message, "field": field}, status_code=status)
    return render(request, "scan.html", status_code=status, condition_options=CONDITION_NAMES,
                  notice=None, error=message)


@router.post(UPLOAD_PATH)
async def send_photo(request: Request,
                     session: Session = Depends(require_page("write"))) -> Response:
    """One photo from the page's script (JSON back), or the form itself without JavaScript,
    which may carry several (the page comes back saying how many were queued)."""
    settings = request.app.state.settings
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 8,
                                  max_part_size=settings.image_max_bytes + 64 * 1024)
    except Exception:  # not multipart, or a body the parser cannot read
        return _failed(request, 400, "Send the photos from the scan page's form "
                                     f"(at most {MAX_FILES} at once).")
    csrf = form.get("csrf")
    check_csrf(session, csrf if isinstance(csrf, str) else None)
    images = [f for f in form.getlist("image") if isinstance(f, UploadFile)]
    if not images:
        return _failed(request, 422, "Choose or take a photo first.")
    condition = form.get("condition")
    location = form.get("location")
    sent: list[dict[str, Any]] = []
    for n, image in enumerate(images, 1):
        which = f"Photo {n} of {len(images)}: " if len(images) > 1 else ""
        try:
            where = fields.text(location if isinstance(location, str) else None, "location",
                                max_length=fields.MAX_TEXT)
            sent.append(await photos.submit(
                _db(request), await image.read(), settings=settings,
                submitter=session.principal.owner,
                condition=condition if isinstance(condition, str) and condition else "NM",
                location=where, metadata={"source": "scan-page"}))
        except ImageRejected as exc:
            return _failed(request, exc.status, f"{which}{exc}.{_queued(sent)}")
        except ValidationError as exc:
            return _failed(request, 422, f"{which}{exc}.{_queued(sent)}", exc.field or "form")
    if _wants_json(request):
        return JSONResponse(summary(sent[0]), status_code=201)
    return RedirectResponse(f"/scan?sent={sent[0]['id']}&count={len(sent)}", status_code=303)


def _queued(sent: list[dict[str, Any]]) -> str:
    return f" The {len(sent)} before it were queued." if sent else ""


def summary(c: dict[str, Any]) -> dict[str, Any]:
    """What the scan page shows of a capture."""
    top = (c["candidates"] or [None])[0]
    item = c.get("item") or {}
    return {
        "id": c["id"], "status": c["status"], "done": c["status"] in DONE,
        "photo": f"/captures/{c['id']}/photo" if c.get("image_sha256") else None,
        "card": None if top is None or c["status"] != "processed" else {
            "id": top["card_id"], "name": top["name"], "set": top["set_name"],
            "number": top["number"], "confidence": top["confidence"]},
        "best": None if top is None else {"name": top["name"], "set": top["set_name"],
                                          "number": top["number"],
                                          "confidence": top["confidence"]},
        "item": {"id": item.get("item_id"), "sku": item.get("sku")} if item else None,
        "reasons": [r["message"] for r in c["reasons"]],
        "read": {k: v for k, v in (c["fields"] or {}).items() if v},
        "error": c["error"],
    }


@router.get("/scan/captures/{raw_id}")
async def follow(request: Request, raw_id: str,
                 session: Session = Depends(require_page("read"))) -> JSONResponse:
    capture_id = positive_id(raw_id)
    capture = await captures.get(_db(request), capture_id) if capture_id else None
    if capture is None:
        return JSONResponse({"error": f"no capture {raw_id[:20]}"}, status_code=404)
    return JSONResponse(summary(capture), headers={"Cache-Control": "no-store"})


@router.get("/captures/{raw_id}/photo")
async def photo(request: Request, raw_id: str,
                session: Session = Depends(require_page("read"))) -> Response:
    capture_id = positive_id(raw_id)
    capture = await captures.get(_db(request), capture_id) if capture_id else None
    if capture is None or not capture["image_sha256"]:
        raise HTTPException(404, "This capture has no photo.")
    try:
        data = await asyncio.to_thread(photos.photo, request.app.state.settings,
                                       capture["image_sha256"])
    except ImageMissing:
        raise HTTPException(404, "The photo is missing from the image store.") from None
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400, immutable",
                             "X-Content-Type-Options": "nosniff"})
