"""Bearer-token authentication for the API, with scopes and a limit on failures.

Catalog reads may be anonymous; every write needs a token whose scope allows it. A
client that keeps presenting bad tokens is told to wait (429) before it may try again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from cardmint.ops.tokens import SCOPES, Principal, authenticate

__all__ = ["FailureLimiter", "Principal", "require_scope"]


class FailureLimiter:
    """At most `limit` failed authentications per client within `window_s`."""

    def __init__(self, limit: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and self.clock() - times[0] > self.window_s:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait, or None if it may try now."""
        times = self._recent(client)
        if len(times) < self.limit:
            return None
        return max(1, int(self.window_s - (self.clock() - times[0])) + 1)

    def fail(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._failures) > 10_000:  # bound the memory a scan of addresses could take
            self._failures = {c: t for c, t in self._failures.items() if t}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the request's principal, if its token allows `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        limiter: FailureLimiter = request.app.state.auth_failures
        client = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(client)
        if wait is not None:
            raise HTTPException(429, "too many failed authentications; try again later",
                                headers={"Retry-After": str(wait)})
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _unauthorized("this needs a token: Authorization: Bearer <token>")
        principal = await authenticate(request.app.state.db, token.strip())
        if principal is None:
            limiter.fail(client)
            raise _unauthorized("the token is not valid")  # never echo what was sent
        if not principal.allows(scope):
            raise HTTPException(403, f"the token's scope ({principal.scope}) does not allow "
                                     f"{scope}")
        return principal

    return dependency
