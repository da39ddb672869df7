"""Sign in by pasting an API token; sign out; `/` leads to the catalog."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cardmint.tokens import SCOPES
from cardmint.web.forms import read_form
from cardmint.web.render import render
from cardmint.web.session import (
    check_csrf,
    check_token,
    current_session,
    safe_next,
    same_origin,
    sign_in,
    sign_out,
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/catalog", status_code=303)


def _page(request: Request, *, next_url: str, needs: str | None = None, error: str = "",
          status_code: int = 200) -> HTMLResponse:
    return render(request, "signin.html", status_code=status_code, next_url=next_url,
                  needs=needs if needs in SCOPES else None, error=error)


@router.get("/signin")
async def signin_form(request: Request, next: str = "/catalog",
                      needs: str | None = None) -> HTMLResponse:
    await current_session(request)  # the nav then shows who is signed in, if anyone
    return _page(request, next_url=safe_next(next), needs=needs)


@router.post("/signin")
async def signin_submit(request: Request) -> Response:
    form = await read_form(request)
    next_url = safe_next(form.get("next"))
    if not same_origin(request):
        return _page(request, next_url=next_url, status_code=403,
                     error="This sign-in came from another site and was refused.")
    token = form.get("token", "").strip()
    if not token:
        return _page(request, next_url=next_url, status_code=400,
                     error="Paste a token into the Token field.")
    principal = await check_token(request, token)
    if principal is None:
        # never repeat what was pasted: the field comes back empty
        return _page(request, next_url=next_url, status_code=401,
                     error="That token is not valid (unknown, revoked or mistyped).")
    response = RedirectResponse(next_url, status_code=303)
    sign_in(request, response, token)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await current_session(request)
    if session is not None:  # a stale cookie may always be dropped; a live one needs the form
        check_csrf(session, (await read_form(request)).get("csrf"))
    response = RedirectResponse("/signin", status_code=303)
    sign_out(request, response)
    return response
