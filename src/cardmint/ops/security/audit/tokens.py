"""The audit's view of the API tokens: admin tokens (how many, how old, last used) and
tokens nobody has used for a long time. Never a token itself: only ids, owners, prefixes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from cardmint.ops.security.audit.finding import Finding

TOKENS_SQL = """
SELECT id, owner, scope, prefix, created_at, last_used_at
FROM api_tokens WHERE revoked_at IS NULL ORDER BY id
"""
UNUSED_FOR = timedelta(days=90)
ADMIN_MAX_AGE = timedelta(days=90)
ADMIN_IDLE = timedelta(days=30)
ADMIN_MANY = 3


def token_findings(rows: Sequence[Any], now: datetime) -> list[Finding]:
    out = []
    admins = [r for r in rows if r["scope"] == "admin"]
    if len(admins) > ADMIN_MANY:
        out.append(Finding("admin_tokens_many", "P2", "API tokens",
                           f"{len(admins)} admin tokens are active (ids "
                           f"{', '.join(str(r['id']) for r in admins)})",
                           "keep one per person on call; `cardmint token revoke ID` the rest"))
    for r in rows:
        obj = f"API token {r['id']} ({r['owner']}, {r['prefix']}…)"
        revoke = f"`cardmint token revoke {r['id']}`"
        used = r["last_used_at"] or r["created_at"]
        if now - used > UNUSED_FOR:
            out.append(Finding("token_unused", "P2", obj,
                               f"not used for {(now - used).days} days",
                               f"{revoke} if nobody needs it"))
            continue
        if r["scope"] != "admin":
            continue
        if now - r["created_at"] > ADMIN_MAX_AGE:
            out.append(Finding("admin_token_old", "P2", obj,
                               f"an admin token {(now - r['created_at']).days} days old",
                               f"create a new one (`cardmint token create --scope admin`), "
                               f"then {revoke}"))
        elif now - used > ADMIN_IDLE:
            out.append(Finding("admin_token_idle", "P2", obj,
                               f"an admin token unused for {(now - used).days} days",
                               f"{revoke} if nobody needs it"))
    return out


def token_summary(rows: Sequence[Any], now: datetime) -> dict[str, Any]:
    admins = [r for r in rows if r["scope"] == "admin"]
    uses = [r["last_used_at"] for r in admins if r["last_used_at"]]
    return {"active": len(rows), "admin": len(admins),
            "oldest_admin_days": max(((now - r["created_at"]).days for r in admins),
                                     default=None),
            "last_admin_use": max(uses).isoformat() if uses else None}
