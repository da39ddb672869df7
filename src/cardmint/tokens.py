"""API tokens: created once and shown once, stored as SHA-256, checked in constant time.

A token is `cm_` plus 32 random bytes (URL-safe base64). With that much entropy a fast
hash is safe to store; nothing in the database could be presented as a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cardmint.db import Database, one
from cardmint.db.values import TOKEN_SCOPES
from cardmint.errors import DatabaseError, UsageError, ValidationError

SCOPES = TOKEN_SCOPES
PREFIX = "cm_"
MAX_CLIENTS = 10_000  # addresses the failure limiter remembers at most
log = logging.getLogger(__name__)
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
    for reading when there is no primary. Recording its use is always best-effort."""
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
        # Recording the use is bookkeeping: it never decides an answer. Under `db freeze`
        # the write is refused (permission denied), without a primary it cannot be made;
        # either way the token is still good and a read must still be served.
        try:
            await db.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1",
                             row["id"])
        except DatabaseError as exc:
            log.info("token %s used; its last use not recorded (%s)", row["id"],
                     type(exc).__name__)
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


@dataclass
class _Failures:
    times: deque[float]
    strikes: int = 0  # failures past the limit, since the client was last quiet
    wait_until: float = 0.0


class FailureLimiter:
    """Failed authentications per client address, with backoff; in memory, one per
    process, shared by the API and the pages.

    A client may fail `limit` times within `window_s`. Each failure beyond that makes it
    wait before trying again, 1 s and doubling up to `max_wait_s`, and is answered 429
    with that Retry-After. It is a slow-down, not a lock: a valid token is always
    accepted and never counts (see `require_scope`, `check_token`), so one client sending
    bad tokens cannot lock out the others behind the same address (a proxy, a NAT, every
    local client on loopback). Guessing is not what the limit must prevent (a token has
    256 random bits); it keeps a misbehaving client slow, told and visible."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_wait_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.max_wait_s = limit, window_s, max_wait_s
        self.clock = clock
        self._failures: dict[str, _Failures] = {}

    def _recent(self, client: str) -> _Failures:
        now = self.clock()
        record = self._failures.setdefault(client, _Failures(deque(maxlen=self.limit + 1)))
        while record.times and now - record.times[0] > self.window_s:
            record.times.popleft()
        if not record.times and now >= record.wait_until:
            record.strikes = 0  # quiet for a whole window and past its wait: afresh
        return record

    def __len__(self) -> int:
        """How many client addresses are remembered."""
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Seconds the client is told to wait before its next attempt, or None."""
        record = self._failures.get(client)
        if record is None:
            return None
        left = record.wait_until - self.clock()
        return math.ceil(left) if left > 0 else None

    def fail(self, client: str) -> int | None:
        """Count a failed attempt; the seconds the client must now wait (past the limit),
        else None."""
        record = self._recent(client)
        now = self.clock()
        record.times.append(now)
        if len(self._failures) > MAX_CLIENTS:  # a scan of addresses cannot grow it unbounded
            kept = [(c, r) for c, r in self._failures.items()
                    if c != client and (r.times or r.wait_until > now)]
            self._failures = dict(kept[-(MAX_CLIENTS // 2):])  # the most recent half
            self._failures[client] = record
        if len(record.times) <= self.limit:
            return None
        record.strikes += 1
        wait = min(self.max_wait_s, 2.0 ** min(record.strikes - 1, 30))
        record.wait_until = max(record.wait_until, now + wait)
        return max(1, math.ceil(record.wait_until - now))
