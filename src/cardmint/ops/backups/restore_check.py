"""Is a restored copy fit to serve? Asked before `--repoint` may switch the application.

It must be a promoted primary at the code's schema head, not frozen, and pass the same
health check and test-card the runbook uses after a deploy. Two health findings are
expected on a fresh copy and do not fail it: WAL archiving (off until it is repointed)
and the backup age (its catalog is as old as the backup it came from).
"""

from __future__ import annotations

import asyncio
from typing import Any

from cardmint.cluster.pg.roles import ident as quote_ident
from cardmint.config import Settings, secret
from cardmint.db import migrate
from cardmint.db.connect import connection
from cardmint.errors import CardmintError
from cardmint.ops.freeze import is_frozen
from cardmint.ops.health.report import check_health
from cardmint.ops.health.testcard import run_test_card

EXPECTED_ON_RESTORE = frozenset({"wal_archiving", "backup_age"})

# Rows are counted as the owner; a table it cannot read (made by hand, as the superuser)
# is named in a warning, not a failure: the copy can serve without it.
TABLES_SQL = """
SELECT c.relname, has_table_privilege(c.oid, 'SELECT') AS readable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1
"""


async def verify_restored(settings: Settings) -> dict[str, Any]:
    """Checks against the node `settings` point at; never raises for a finding."""
    checks: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": ok, "detail": detail})

    dsn = secret(settings.migration_url)
    counts: dict[str, int] = {}
    try:
        async with connection(dsn or "", settings, application="cardmint-restore") as conn:
            in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
            add("promoted", not in_recovery,
                "accepting writes" if not in_recovery else "still in recovery")
            frozen = await is_frozen(conn)
            add("not_frozen", not frozen,
                "writes allowed" if not frozen else "frozen: run `cardmint db thaw` on it")
            unread = []
            for table in await conn.fetch(TABLES_SQL):
                name = table["relname"]
                if not table["readable"]:
                    unread.append(name)
                    continue
                counts[name] = await conn.fetchval(
                    f"SELECT count(*) FROM public.{quote_ident(name)}")
            if unread:
                add("row_counts", True, f"not counted, the owner cannot read: "
                                        f"{', '.join(unread)}")
        current = await asyncio.to_thread(migrate.current, dsn or "")
        head = migrate.head()
        add("schema", current == head, f"revision {current}, code head {head}")
    except CardmintError as exc:
        add("connect", False, str(exc))
        return {"ok": False, "checks": checks, "row_counts": counts, "health": None,
                "test_card": None}

    health = await check_health(settings)
    health_dict = health.to_dict()
    blocking = [c for c in health_dict["checks"] if c["status"] == "critical"
                and c["name"] not in EXPECTED_ON_RESTORE]
    add("health", not blocking,
        f"health {health.status}" + "".join(f"; {c['name']}: {c['detail']}" for c in blocking))
    card = await run_test_card(settings)
    failed = [s for s in card.steps if not s.ok]
    add("test_card", card.ok,
        "write, read back and cleanup passed" if card.ok else
        "; ".join(f"{s.name}: {s.detail}" for s in failed) or "failed")
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "row_counts": counts,
            "health": health_dict, "test_card": card.to_dict()}
