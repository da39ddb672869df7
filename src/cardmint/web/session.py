"""Sign-in for the pages: a pasted API token kept in a cookie, checked like the API checks it.

The cookie holds the token itself (HttpOnly, SameSite=Strict, Secure except on loopback
http), so there is no second credential store: revoking a token with `cardmint token`
signs its pages out too. Every check goes through `cardmint.tokens.authenticate` and
the app's `FailureLimiter`, the same two the API's `require_scope` uses.

Forms that write carry a CSRF token derived from the session's token (an HMAC), so it
needs no storage and a cross-site page, which cannot read the cookie, cannot forge it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from fastapi import Request, Response

from cardmint.tokens import SCOPES, FailureLimiter, Principal, authenticate

__all__ = ["COOKIE", "CsrfRefused", "Session", "SignInRequired", "TooManyFailures",
           "check_csrf", "current_session", "forget_stale", "require_page", "sign_in",
           "sign_out"]

COOKIE = "cardmint_session"
COOKIE_MAX_AGE_S = 12 * 3600  # a working day; the token itself stays valid until revoked
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

ResponseT = TypeVar("ResponseT", bound=Response)


@dataclass(frozen=True)
class Session:
    """Who the page is for, and the CSRF value its forms must carry."""

    principal: Principal
    csrf: str

    def allows(self, scope: str) -> bool:
        return self.principal.allows(scope)


class SignInRequired(Exception):
    """No valid session, or one whose scope is too small: the handler redirects to sign-in."""

    def __init__(self, next_url: str, needs: str | None = None) -> None:
        super().__init__(f"sign in (needs {needs or 'a token'})")
        self.next_url = next_url
        self.needs = needs  # the scope the page wants when the token's is too small


class TooManyFailures(Exception):
    """The client failed authentication too often; it must wait `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class CsrfRefused(Exception):
    """A write form arrived without the session's CSRF token."""


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), b"cardmint-web-csrf", hashlib.sha256).hexdigest()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _limiter(request: Request) -> FailureLimiter:
    return request.app.state.auth_failures  # type: ignore[no-any-return]


async def check_token(request: Request, token: str, *,
                      stale_ok: bool = False) -> Principal | None:
    """The token's principal, or None; a failure counts against the client like the API's
    (past the limit, TooManyFailures: a valid token always passes). `stale_ok`: a
    replica may answer (see `authenticate`)."""
    principal = await authenticate(request.app.state.db, token.strip(), stale_ok=stale_ok)
    if principal is None:
        wait = _limiter(request).fail(_client(request))
        if wait is not None:
            raise TooManyFailures(wait)
    return principal


async def current_session(request: Request, *, stale_ok: bool = False) -> Session | None:
    """The signed-in session, or None (no cookie, or a token no longer valid)."""
    cached = getattr(request.state, "web_session", ...)
    if cached is not ...:
        return cached  # type: ignore[no-any-return]
    token = request.cookies.get(COOKIE, "")
    session = None
    if token:
        try:
            principal = await check_token(request, token, stale_ok=stale_ok)
        except TooManyFailures:
            request.state.stale_cookie = True  # the 429 page drops it too
            raise
        if principal is not None:
            session = Session(principal, csrf_for(token))
        else:
            # revoked or expired: the response drops the cookie (`forget_stale`), so one
            # stale cookie costs one failed attempt, not one per page view
            request.state.stale_cookie = True
    request.state.web_session = session  # render() shows who is signed in from this
    return session


def forget_stale(request: Request, response: ResponseT) -> ResponseT:
    """Delete the session cookie if this request found its token no longer valid."""
    if getattr(request.state, "stale_cookie", False):
        sign_out(request, response)
    return response


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def require_page(scope: str = "read", *,
                 stale_ok: bool = False) -> Callable[[Request], Awaitable[Session]]:
    """A page dependency: the session, if its token allows `scope`; else a redirect to sign-in
    that comes back here afterwards."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Session:
        session = await current_session(request, stale_ok=stale_ok)
        if session is None:
            raise SignInRequired(_here(request))
        if not session.allows(scope):
            raise SignInRequired(_here(request), needs=scope)
        return session

    return dependency


def check_csrf(session: Session, submitted: str | None) -> None:
    """Refuse a write whose form does not carry this session's CSRF token."""
    # as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
    if not submitted or not hmac.compare_digest(submitted.encode(), session.csrf.encode()):
        raise CsrfRefused


def _secure(request: Request) -> bool:
    # Secure cookies never travel over plain http; only a loopback http server may do without.
    return not (request.url.scheme == "http" and (request.url.hostname or "") in LOOPBACK)


def sign_in(request: Request, response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token.strip(), max_age=COOKIE_MAX_AGE_S, httponly=True,
                        samesite="strict", secure=_secure(request), path="/")


def sign_out(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=_secure(request),
                           path="/")


def signin_url(next_url: str, needs: str | None = None) -> str:
    # only a scope name travels in the link, never text the sign-in page would repeat
    url = f"/signin?next={quote(next_url, safe='')}"
    return url + (f"&needs={needs}" if needs in SCOPES else "")


def safe_next(next_url: str | None) -> str:
    """Only same-site paths: a sign-in link must not become an open redirect."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//") \
            or "\\" in next_url:
        return "/catalog"
    return next_url


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site. Sign-in has no session
    to tie a CSRF token to, so this keeps another site from signing a person in as it."""
    origin = request.headers.get("origin")
    if origin is None:  # older clients and non-browser tools send none
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"
