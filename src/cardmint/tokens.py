"""API tokens: created once and shown once, stored as SHA-256, checked in constant time.

A token is `cm_` plus 32 random bytes (URL-safe base64). With that much entropy a fast
hash is safe to store; nothing in the database could be presented as a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cardmint.db import Database, one
from cardmint.db.values import TOKEN_SCOPES
from cardmint.errors import DatabaseUnavailable, UsageError, ValidationError

SCOPES = TOKEN_SCOPES
PREFIX = "cm_"
TOUCH_EVERY_S = 60  # last_used_at is refreshed at most this often (a write per use is waste)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    token_id: int
    owner: str
    scope: str

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(db: Database, *, owner: str, scope: str) -> tuple[str, dict[str, Any]]:
    """A new token (returned once, never stored) and its record."""
    owner = owner.strip()
    if not owner or len(owner) > 100:
        raise ValidationError("owner must be 1 to 100 characters", field="owner")
    if scope not in SCOPES:
        raise ValidationError(f"scope must be one of {', '.join(SCOPES)}", field="scope")
    token = PREFIX + secrets.token_urlsafe(32)
    row = await db.fetchrow(
        "INSERT INTO api_tokens (owner, scope, token_hash, prefix) VALUES ($1, $2, $3, $4) "
        "RETURNING id, owner, scope, prefix, created_at", owner, scope, digest(token),
        token[:8])
    return token, dict(one(row))


async def authenticate(db: Database, token: str, *, stale_ok: bool = False) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, revoked, malformed).
    `stale_ok` lets a replica vouch for it (a revocation reaches it within the replica lag)
    and makes recording its use best-effort: for reading when there is no primary."""
    if not token.startswith(PREFIX) or len(token) > 100:
        return None
    wanted = digest(token)
    row = await db.fetchrow(
        "SELECT id, owner, scope, token_hash, "
        "       last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2) "
        "         AS stale "
        "FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", wanted, TOUCH_EVERY_S,
        stale_ok=stale_ok)
    # the lookup is by hash; compare again in constant time all the same
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), wanted):
        return None
    if row["stale"]:
        try:
            await db.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1",
                             row["id"])
        except DatabaseUnavailable:
            if not stale_ok:
                raise
    return Principal(row["id"], row["owner"], row["scope"])


async def list_tokens(db: Database, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, owner, scope, prefix, created_at, last_used_at, revoked_at FROM api_tokens "
        "WHERE $1 OR revoked_at IS NULL ORDER BY id", include_revoked)
    return [dict(r) for r in rows]


async def revoke_token(db: Database, token_id: int, *, now: datetime | None = None) -> None:
    done = await db.execute(
        "UPDATE api_tokens SET revoked_at = coalesce($2, now()) "
        "WHERE id = $1 AND revoked_at IS NULL", token_id, now)
    if done != "UPDATE 1":
        raise UsageError(f"no active token {token_id}")


class FailureLimiter:
    """At most `limit` failed authentications per client within `window_s`: in memory,
    one per process, shared by the API and the pages."""

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
