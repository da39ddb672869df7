"""Bearer-token authentication for the API, with scopes and a limit on failures.

Catalog reads may be anonymous; every write needs a token whose scope allows it. A
client that keeps presenting bad tokens is told to wait (429, backing off) before it may
try again; a valid token is always accepted (`cardmint.tokens.FailureLimiter`). The
client is the connection's address, or the address a configured proxy forwarded
(`CARDMINT_TRUSTED_PROXIES`): never a header anyone else sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from cardmint.tokens import SCOPES, FailureLimiter, Principal, authenticate

__all__ = ["FailureLimiter", "Principal", "require_scope"]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the request's principal, if its token allows `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _unauthorized("this needs a token: Authorization: Bearer <token>")
        # checked first: a valid token passes whatever others did from this address
        principal = await authenticate(request.app.state.db, token.strip())
        if principal is None:
            limiter: FailureLimiter = request.app.state.auth_failures
            wait = limiter.fail(request.client.host if request.client else "unknown")
            if wait is not None:
                raise HTTPException(429, "too many failed authentications from this "
                                         "address; wait before trying again",
                                    headers={"Retry-After": str(wait)})
            raise _unauthorized("the token is not valid")  # never echo what was sent
        if not principal.allows(scope):
            raise HTTPException(403, f"the token's scope ({principal.scope}) does not allow "
                                     f"{scope}")
        return principal

    return dependency
