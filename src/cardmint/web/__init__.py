"""Server-rendered web pages, served by `cardmint serve` beside the API.

`mount(app)` adds them: the static files under `/static`, the sign-in pages, the
handlers that turn a missing sign-in into a redirect, and every page module of this
package.

How a page module registers itself: create `cardmint/web/<name>.py` that defines

    router = APIRouter(include_in_schema=False)   # pages stay out of the OpenAPI schema

    @router.get("/dashboard")
    async def dashboard(request: Request,
                        session: Session = Depends(require_page("admin"))) -> HTMLResponse:
        ...
        return render(request, "dashboard.html", nodes=nodes)

(`Session` and `require_page` from `cardmint.web.session`, `render` from
`cardmint.web.render`). `mount` imports every module here that has a module-level `router`
and includes it; nothing else to edit. The template extends `base.html` and fills
`{% block title %}` and `{% block content %}` (optionally `{% block head %}` for a
`<meta>` or a `<script src="/static/...">`). The Content-Security-Policy allows only our
own files: no inline `<script>` or `style="..."` attributes (use classes in
`static/cardmint.css`; SVG presentation attributes such as `stroke` are fine). A form that
writes carries `<input type="hidden" name="csrf" value="{{ csrf }}">` and its handler
calls `session.check_csrf(session, form.get("csrf"))` before doing anything.

Pages call the same functions the API calls (`cardmint.inventory`, `catalog`, `intake`,
`ops`), never the API over HTTP, and render; rules live in those layers only.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from cardmint.errors import DatabaseUnavailable
from cardmint.web.files_pages import UPLOAD_PATH as IMPORT_UPLOAD_PATH
from cardmint.web.forms import FormRefused
from cardmint.web.render import render
from cardmint.web.scan_pages import UPLOAD_PATH as SCAN_UPLOAD_PATH
from cardmint.web.session import (
    CsrfRefused,
    SignInRequired,
    TooManyFailures,
    forget_stale,
    signin_url,
)

__all__ = ["IMPORT_UPLOAD_PATH", "SCAN_UPLOAD_PATH", "mount"]

STATIC = Path(__file__).parent / "static"
API_PREFIXES = ("/v1", "/health", "/metrics", "/docs", "/redoc", "/openapi")


def mount(app: FastAPI) -> None:
    """Add the pages, their static files and their error handlers to the app."""
    app.mount("/static", StaticFiles(directory=STATIC), name="web-static")
    for module in _page_modules():
        app.include_router(module.router)
    app.add_exception_handler(SignInRequired, _to_sign_in)  # type: ignore[arg-type]
    app.add_exception_handler(TooManyFailures, _too_many)  # type: ignore[arg-type]
    app.add_exception_handler(CsrfRefused, _csrf_refused)  # type: ignore[arg-type]
    app.add_exception_handler(FormRefused, _form_refused)  # type: ignore[arg-type]
    for kind in (DatabaseUnavailable, HTTPException, RequestValidationError):
        _html_for_people(app, kind)


def _page_modules() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "router"):
            found.append(module)
    return found


async def _to_sign_in(request: Request, exc: SignInRequired) -> Response:
    return forget_stale(request, RedirectResponse(signin_url(exc.next_url, exc.needs),
                                                  status_code=303))


async def _too_many(request: Request, exc: TooManyFailures) -> HTMLResponse:
    response = render(request, "message.html", status_code=429, heading="Too many attempts",
                      message="Too many sign-in attempts with tokens that are not valid came "
                              f"from your address. Try again in {exc.retry_after} seconds.")
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _csrf_refused(request: Request, exc: CsrfRefused) -> HTMLResponse:
    return render(request, "message.html", status_code=403, heading="Form refused",
                  message="This form did not carry the security token of your session "
                          "(it may come from another site, or from before you signed in "
                          "again). Nothing was changed. Go back, reload the page and submit "
                          "it again.")


async def _form_refused(request: Request, exc: FormRefused) -> HTMLResponse:
    what = "The form" if exc.field == "form" else f"The field {exc.field[:40]!r}"
    return render(request, "message.html", status_code=400, heading="Form refused",
                  message=f"{what} {exc.message}. Nothing was changed. Go back, correct "
                          "it and submit the form again.")


def _wants_page(request: Request) -> bool:
    """A person's browser asking for a page (not a client of the API)."""
    return (not request.url.path.startswith(API_PREFIXES)
            and "text/html" in request.headers.get("accept", ""))


def _html_for_people(app: FastAPI, kind: type[Exception]) -> None:
    """Keep the API's problem+json answer for `kind`, but show a browser a page: a person
    should never see JSON, a traceback, or a 500 for a missing page or a database away."""
    original = app.exception_handlers[kind]

    async def handler(request: Request, exc: Exception) -> Response:
        if not _wants_page(request):
            answer = original(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        if isinstance(exc, DatabaseUnavailable):
            response = render(request, "message.html", status_code=503,
                              heading="The database is not available",
                              message="CardMint cannot reach its database just now, so "
                                      "nothing was read or changed. Try again in a few "
                                      "seconds.")
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        if isinstance(exc, HTTPException):
            heading = "Page not found" if exc.status_code == 404 else "Not possible"
            return render(request, "message.html", status_code=exc.status_code,
                          heading=heading, message=str(exc.detail), back="/catalog")
        return render(request, "message.html", status_code=400, heading="Bad request",
                      message="The address has a value this page cannot use.",
                      back="/catalog")

    app.add_exception_handler(kind, handler)
