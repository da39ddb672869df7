"""The files page: upload a TCGplayer, Collectr or Dragon Shield file, see per row what it
matched and what the import does (a preview changes nothing), then import it; download the
stock in each layout, and an empty template of each."""

from __future__ import annotations

import io
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from cardmint.db import Database
from cardmint.errors import ValidationError
from cardmint.intake import imports
from cardmint.inventory import fields
from cardmint.inventory.interchange import exports, importer, layouts, vocab
from cardmint.inventory.items import Filters
from cardmint.web.render import render
from cardmint.web.session import Session, check_csrf, require_page

router = APIRouter(include_in_schema=False)

UPLOAD_PATH = "/inventory/files"
SHOWN_ROWS = 1_000  # rows listed on the page; the counts cover the whole file
MODES = {"add": "Add: every row adds its copies",
         "sync": "Sync: the file states the counts"}


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _page(request: Request, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    return render(request, "files.html", status_code=status_code, formats=layouts.FORMATS,
                  titles=layouts.TITLES, export_formats=exports.EXPORT_FORMATS, modes=MODES,
                  headers={f: exports.template(f).splitlines()[-1] for f in layouts.FORMATS},
                  shown_rows=SHOWN_ROWS, condition_names=vocab.CONDITION_NAMES,
                  **{"report": None, "error": None, "form": {}, **context})


@router.get(UPLOAD_PATH)
async def files(request: Request,
                session: Session = Depends(require_page("read"))) -> HTMLResponse:
    return _page(request)


@router.post(UPLOAD_PATH)
async def upload(request: Request,
                 session: Session = Depends(require_page("write"))) -> HTMLResponse:
    """Preview (the default) or import the file sent with the form."""
    settings = request.app.state.settings
    try:
        form = await request.form(max_files=1, max_fields=12,
                                  max_part_size=settings.api_max_import_bytes)
    except Exception:  # not multipart, or a body the parser cannot read
        return _page(request, status_code=400, error="Send the file with this page's form.")
    csrf = form.get("csrf")
    check_csrf(session, csrf if isinstance(csrf, str) else None)
    shown = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return _page(request, status_code=422, error="Choose a file first.", form=shown)
    fmt = shown.get("format") or None
    mode = shown.get("mode") or "add"
    doing = shown.get("action") == "import"
    try:
        if fmt is not None and fmt not in layouts.FORMATS:
            raise ValidationError("is not one of the layouts", field="format")
        if mode not in importer.MODES:
            raise ValidationError("must be add or sync", field="mode")
        location = fields.text(shown.get("location"), "location")
        text = io.TextIOWrapper(upload.file, encoding="utf-8-sig", newline="")
        who = session.principal.owner
        async with _db(request).transaction() as tx:
            report = await importer.run(
                tx, layouts.Reader(text, fmt, location), mode=mode, actor=f"web:{who}",
                dry_run=not doing, prune=shown.get("prune") == "yes",
                review=shown.get("review") == "yes", scope_location=location)
            captures: dict[int, int] = {}
            if doing and report.review:
                captures = await imports.send_to_review(tx, report, report.review,
                                                        submitter=f"web:{who}")
    except UnicodeDecodeError:
        return _page(request, status_code=400, error="The file must be UTF-8 text (CSV).",
                     form=shown)
    except ValidationError as exc:
        where = f"{exc.field}: " if exc.field else ""
        return _page(request, status_code=422, error=f"{where}{exc}", form=shown)
    return _page(request, report=report, captures=captures, done=doing,
                 filename=upload.filename or "the file", form=shown)


@router.get(UPLOAD_PATH + "/export")
async def download(request: Request,
                   session: Session = Depends(require_page("read"))) -> Response:
    fmt = request.query_params.get("format", "")
    location = (request.query_params.get("location") or "").strip() or None
    if fmt not in exports.EXPORT_FORMATS or (location and len(location) > fields.MAX_TEXT):
        return _page(request, status_code=422, error="Choose one of the export formats "
                     "(and a location of at most 100 characters).")
    chunks = await exports.export(_db(request), fmt, Filters(location=location))
    return StreamingResponse(iter(chunks), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="cardmint-{fmt}.csv"'})


@router.get(UPLOAD_PATH + "/template")
async def template(request: Request,
                   session: Session = Depends(require_page("read"))) -> Response:
    fmt = request.query_params.get("format", "")
    if fmt not in layouts.FORMATS:
        return _page(request, status_code=422, error="Choose one of the layouts.")
    return Response(exports.template(fmt), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{fmt}-template.csv"'})
