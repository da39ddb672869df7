"""Photo uploads and the photos of captures.

`POST /v1/captures` with a photo instead of JSON: `multipart/form-data` (the photo in the
`image` part; `condition`, `language`, `location`, `priority` as further parts) or the
photo itself as the body (`Content-Type: image/jpeg`, `image/png` or `image/webp`, the same
options as query parameters). The JSON route in `api/intake.py` keeps every other request:
`UploadRoute` matches only requests whose content type is an upload, so the two share the
path. Answers like the JSON route: 201 with the capture and its Location; 413 above
`image_max_bytes`, 415 for a format we do not take, 422 for a photo we cannot read or
whose pixel count is out of bounds.

`GET /v1/captures/{id}/image`: the stored photo (upright, no metadata), with the read scope
only: photos show a shop's stock and whoever took them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.routing import Match
from starlette.types import Scope

from cardmint import inputs
from cardmint.api.auth import Principal, require_scope
from cardmint.api.idempotency import idempotent
from cardmint.api.intake import MAX_ID
from cardmint.api.models.intake import Capture, OneCapture
from cardmint.api.models.problem import ProblemItem
from cardmint.api.problems import AUTH, problem, responses
from cardmint.config import Settings
from cardmint.db import Transaction
from cardmint.errors import ValidationError
from cardmint.intake import captures, photos
from cardmint.scan.images import CONTENT_TYPES, ImageRejected
from cardmint.scan.store import ImageMissing

UPLOAD_PATH = "/v1/captures"
FORM = "multipart/form-data"
OPTIONS = ("condition", "language", "location", "priority")


def content_type(scope: Scope) -> str:
    for key, value in scope.get("headers") or []:
        if key == b"content-type":
            return str(value.decode("latin-1")).split(";")[0].strip().lower()
    return ""


def is_upload(scope: Scope) -> bool:
    kind = content_type(scope)
    return kind == FORM or kind in CONTENT_TYPES


class UploadRoute(APIRoute):
    """A POST route that only takes uploads (multipart or an image body); other requests
    to the same path go on to the next route."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL and scope.get("method") == "POST" and not is_upload(scope):
            return Match.NONE, {}
        return match, child


router = APIRouter(prefix="/v1", tags=["intake"], route_class=UploadRoute)


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _rejected(exc: ValidationError) -> JSONResponse:
    status = exc.status if isinstance(exc, ImageRejected) else 422
    title = {413: "Content Too Large", 415: "Unsupported Media Type"}.get(
        status, "Unprocessable Content")
    return problem(status, title, str(exc),
                   errors=[ProblemItem(field=f"body.{exc.field or 'image'}", message=str(exc))])


async def _read_upload(request: Request, settings: Settings) -> tuple[bytes, dict[str, str]]:
    """The photo's bytes and the options, from a multipart form or an image body."""
    if content_type(request.scope) != FORM:
        return await request.body(), {k: v for k, v in request.query_params.items()
                                      if k in OPTIONS}
    try:
        form = await request.form(max_files=1, max_fields=len(OPTIONS) + 1,
                                  max_part_size=settings.image_max_bytes + 64 * 1024)
    except HTTPException:
        raise
    except Exception as exc:  # a body python-multipart cannot parse
        raise ValidationError(f"the multipart body cannot be read: {type(exc).__name__}",
                              field="image") from None
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise ValidationError("the form has no file part named image", field="image")
    data = await image.read()
    options = {k: v for k, v in form.items() if k in OPTIONS and isinstance(v, str)}
    return data, options


def _options(raw: dict[str, str]) -> dict[str, Any]:
    """The item's condition, language, location and the priority, checked."""
    out: dict[str, Any] = {}
    if raw.get("condition"):
        out["condition"] = raw["condition"]
    if raw.get("language"):
        out["language"] = raw["language"]
    location = (raw.get("location") or "").strip()
    if len(location) > 100:
        raise ValidationError("location is longer than 100 characters", field="location")
    out["location"] = location or None
    if raw.get("priority"):
        priority = inputs.whole(raw["priority"], maximum=1000)
        if priority is None:
            raise ValidationError("priority must be a whole number from 0 to 1000",
                                  field="priority")
        out["priority"] = priority
    captures.check_item_fields(out.get("condition"), out.get("language"))
    return out


@router.post(UPLOAD_PATH.removeprefix("/v1"), status_code=201, include_in_schema=False)
async def upload_capture(request: Request,
                         who: Principal = Depends(require_scope("write"))) -> Any:
    """A photo in, a queued capture out (the worker reads and identifies it)."""
    settings = _settings(request)
    try:
        data, raw = await _read_upload(request, settings)
        options = _options(raw)
        photo = await photos.store(data, settings)  # before the transaction: CPU and disk
    except ValidationError as exc:
        return _rejected(exc)

    async def run(tx: Transaction) -> tuple[int, OneCapture]:
        capture = await photos.create(tx, photo, submitter=who.owner, **options)
        return 201, OneCapture(data=Capture.of(capture))

    response = await idempotent(request, who, run)
    if response.status_code == 201:
        capture_id = json.loads(bytes(response.body))["data"]["id"]
        response.headers["Location"] = f"/v1/captures/{capture_id}"
    return response


@router.get("/captures/{capture_id}/image", response_class=Response, responses={
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The photo"},
    304: {"description": "Not modified since the ETag given in If-None-Match"},
    **responses(400, 404, 503, *AUTH)})
async def capture_image(request: Request, capture_id: int = Path(..., ge=1, le=MAX_ID),
                        _: Principal = Depends(require_scope("read"))) -> Response:
    """The capture's photo as stored: upright, JPEG, without EXIF. 404 if it has none."""
    capture = await captures.get(request.app.state.db, capture_id)
    if capture is None or not capture["image_sha256"]:
        raise HTTPException(404, f"capture {capture_id} has no photo")
    try:
        data = await asyncio.to_thread(photos.photo, _settings(request),
                                       capture["image_sha256"])
    except ImageMissing as exc:
        raise HTTPException(404, f"the photo of capture {capture_id} is missing from the "
                                 "image store") from exc
    etag = f'"{capture["image_sha256"]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400, immutable",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)
