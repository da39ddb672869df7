"""`cardmint db freeze` / `thaw`: the runbook's "STOP ALL WRITES IMMEDIATELY".

The application role's write privileges (INSERT, UPDATE, DELETE, TRUNCATE on every
table and view, USAGE and UPDATE on every sequence, and column-level INSERT/UPDATE) are
revoked in one transaction, then its sessions with an open transaction are ended, so
nothing written before the freeze commits after it. Privileges are checked by the server
at every statement, in every session, and the role cannot grant them back to itself:
unlike `default_transaction_read_only`, which a session can simply SET off. Reads keep
working; the data layer reports a refused write as `Frozen` (the API's 503).

The freeze is recorded as the application database's comment, `cardmint:frozen {json}`:
who, when, why and the exact privileges taken, so thaw gives back exactly those. A
comment is transactional with the revokes, readable by every role (health asks with
the monitoring role), replicated to the replicas, and carried into backups.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg

from cardmint.clock import utc
from cardmint.cluster.pg.roles import ident, literal
from cardmint.cluster.state import APP
from cardmint.config import Settings, admin_or_owner_dsn, secret
from cardmint.db.connect import connection
from cardmint.db.errors import FREEZE_COMMENT_SQL, FREEZE_MARKER
from cardmint.dsn import username
from cardmint.errors import UsageError

MARKER = FREEZE_MARKER  # the data layer reads it too, to tell a freeze from a missing grant
LOCK_KEY = 0x636D667A  # serialises freeze and thaw
USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%'")

TABLE_GRANTS_SQL = f"""
SELECT format('%I.%I', n.nspname, c.relname) AS relation, c.relkind = 'S' AS sequence,
       a.privilege_type AS privilege, a.is_grantable AS grantable
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE a.grantee = $1::regrole AND {USER_SCHEMAS}
  AND ((c.relkind IN ('r', 'p', 'v', 'f')
        AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))
       OR (c.relkind = 'S' AND a.privilege_type IN ('USAGE', 'UPDATE')))
ORDER BY 1, 3
"""

COLUMN_GRANTS_SQL = f"""
SELECT format('%I.%I', n.nspname, c.relname) AS relation, format('%I', att.attname) AS col,
       a.privilege_type AS privilege, a.is_grantable AS grantable
FROM pg_attribute att
JOIN pg_class c ON c.oid = att.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(att.attacl) a
WHERE a.grantee = $1::regrole AND att.attnum > 0 AND NOT att.attisdropped AND {USER_SCHEMAS}
  AND a.privilege_type IN ('INSERT', 'UPDATE')
ORDER BY 1, 2, 3
"""

SCHEMAS_SQL = f"SELECT format('%I', n.nspname) FROM pg_namespace n WHERE {USER_SCHEMAS}"

# Anything the role could still write after the revokes: through PUBLIC or a role it
# belongs to. A freeze that leaves such a path is refused rather than half done.
STILL_WRITABLE_SQL = f"""
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_SCHEMAS} AND (
      (c.relkind IN ('r', 'p', 'v', 'f')
       AND (has_table_privilege($1, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
            OR has_any_column_privilege($1, c.oid, 'INSERT, UPDATE')))
   OR (c.relkind = 'S' AND has_sequence_privilege($1, c.oid, 'USAGE, UPDATE')))
ORDER BY 1 LIMIT 10
"""

COMMENT_SQL = FREEZE_COMMENT_SQL


async def freeze_state(conn: asyncpg.Connection) -> dict[str, Any] | None:
    """The freeze record (who, when, why, what was taken), or None when not frozen."""
    comment = await conn.fetchval(COMMENT_SQL)
    if not comment or not comment.startswith(MARKER):
        return None
    record: dict[str, Any] = json.loads(comment[len(MARKER):])
    return record


async def is_frozen(conn: asyncpg.Connection) -> bool:
    """Any role may ask (health does, on every node)."""
    return await freeze_state(conn) is not None


def app_role(settings: Settings) -> str:
    return username(secret(settings.database_url) or "") or APP


def _admin_dsn(settings: Settings) -> str:
    # revoking and VACUUM need the tables' owner; ending others' sessions and
    # pg_ls_waldir, the superuser
    return admin_or_owner_dsn(settings)


async def freeze(settings: Settings, *, reason: str, by: str | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """Stop every write of the application role now. Idempotent: freezing a frozen
    database reports the freeze in force."""
    role = app_role(settings)
    async with connection(_admin_dsn(settings), settings, application="cardmint-freeze") as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            state = await freeze_state(conn)
            if state is not None:
                return {"ok": True, "frozen": True, "already": True, **_public(state)}
            tables = [dict(r) for r in await conn.fetch(TABLE_GRANTS_SQL, role)]
            columns = [dict(r) for r in await conn.fetch(COLUMN_GRANTS_SQL, role)]
            for schema in await conn.fetch(SCHEMAS_SQL):
                name = schema[0]
                await conn.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES "
                                   f"IN SCHEMA {name} FROM {ident(role)}")
                await conn.execute(f"REVOKE USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA {name} "
                                   f"FROM {ident(role)}")
            left = [r[0] for r in await conn.fetch(STILL_WRITABLE_SQL, role)]
            if left:
                raise UsageError(
                    f"cannot freeze: {role} could still write {', '.join(left)} through "
                    "PUBLIC or a role it is a member of; revoke those grants first "
                    "(nothing was changed)")
            state = {
                "frozen_at": utc(now).isoformat(), "by": by or _who(), "reason": reason,
                "role": role, "tables": tables, "columns": columns,
                "previous_comment": await conn.fetchval(COMMENT_SQL),
            }
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(f"COMMENT ON DATABASE {ident(database)} IS "
                               f"{literal(MARKER + json.dumps(state))}")
        # After the commit every new statement of the role is refused; what is still open
        # began before the freeze, so it is rolled back rather than let commit.
        ended = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = $1 AND xact_start IS NOT NULL AND pid <> pg_backend_pid()", role)
    return {"ok": True, "frozen": True, "already": False, "sessions_ended": ended,
            "privileges_revoked": len(tables) + len(columns), **_public(state)}


async def thaw(settings: Settings) -> dict[str, Any]:
    """Give the application role back exactly the write privileges the freeze took
    (relations dropped meanwhile are skipped)."""
    async with connection(_admin_dsn(settings), settings, application="cardmint-freeze") as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            state = await freeze_state(conn)
            if state is None:
                return {"ok": True, "frozen": False, "was_frozen": False}
            role = state["role"]
            restored, skipped = 0, []
            for statement, relation in _grants(state, role):
                if await conn.fetchval("SELECT to_regclass($1) IS NULL", relation):
                    skipped.append(relation)
                    continue
                await conn.execute(statement)
                restored += 1
            database = await conn.fetchval("SELECT current_database()")
            previous = state.get("previous_comment")
            await conn.execute(f"COMMENT ON DATABASE {ident(database)} IS "
                               f"{literal(previous) if previous else 'NULL'}")
    return {"ok": True, "frozen": False, "was_frozen": True, "grants_restored": restored,
            "skipped": sorted(set(skipped)), "thawed_at": utc().isoformat(),
            **_public(state)}


def _grants(state: dict[str, Any], role: str) -> list[tuple[str, str]]:
    """GRANT statements rebuilding the recorded privileges, one per relation and
    grant option."""
    table_privs: dict[tuple[str, bool, bool], list[str]] = defaultdict(list)
    for g in state["tables"]:
        table_privs[(g["relation"], g["sequence"], g["grantable"])].append(g["privilege"])
    out = []
    for (relation, sequence, grantable), privs in sorted(table_privs.items()):
        kind = "SEQUENCE" if sequence else "TABLE"
        option = " WITH GRANT OPTION" if grantable else ""
        out.append((f"GRANT {', '.join(sorted(privs))} ON {kind} {relation} TO {ident(role)}"
                    f"{option}", relation))
    column_privs: dict[tuple[str, str, bool], list[str]] = defaultdict(list)
    for g in state["columns"]:
        column_privs[(g["relation"], g["privilege"], g["grantable"])].append(g["col"])
    for (relation, privilege, grantable), cols in sorted(column_privs.items()):
        option = " WITH GRANT OPTION" if grantable else ""
        out.append((f"GRANT {privilege} ({', '.join(cols)}) ON TABLE {relation} TO "
                    f"{ident(role)}{option}", relation))
    return out


def _public(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state.get(k) for k in ("frozen_at", "by", "reason", "role")}


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
