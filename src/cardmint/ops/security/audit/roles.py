"""The audit's view of roles: who may log in, with which attributes and password expiry,
and who is a member of what. From pg_authid (the superuser reads it), on the primary."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from cardmint.cluster.state import APP, MONITOR, OWNER, READONLY, REPLICATION
from cardmint.ops.security.audit.finding import Finding

EXPIRY_WARNING = timedelta(days=14)
KNOWN_ROLES = frozenset({OWNER, APP, READONLY, REPLICATION, MONITOR})
# Membership in these lets a role act as the server's OS user or past every grant.
DANGEROUS_ROLES = {
    "pg_execute_server_program": ("P0", "run any program as the server's OS user "
                                        "(COPY ... TO PROGRAM)"),
    "pg_write_server_files": ("P0", "write any file the server's OS user may (COPY ... TO "
                                    "a file): its configuration, then a program"),
    "pg_read_server_files": ("P1", "read any file the server's OS user may, keys and "
                                   "password files included"),
    "pg_write_all_data": ("P1", "write every table, past every grant"),
    "pg_read_all_data": ("P1", "read every table, past every grant"),
}
EXPECTED_MEMBERSHIPS = {(MONITOR, "pg_monitor")}

ROLES_SQL = """
SELECT rolname, rolsuper, rolcanlogin, rolcreaterole, rolcreatedb, rolbypassrls,
       rolreplication, rolpassword IS NOT NULL AS has_password, rolvaliduntil,
       oid = 10 AS bootstrap
FROM pg_authid WHERE rolname !~ '^pg_' ORDER BY rolname
"""

# Who is a member of what, predefined roles' own memberships (pg_monitor's) left out.
MEMBERSHIPS_SQL = """
SELECT m.rolname AS member, r.rolname AS granted, m.oid = 10 AS member_is_bootstrap,
       m.rolsuper AS member_is_superuser, r.rolsuper AS granted_is_superuser
FROM pg_auth_members a
JOIN pg_roles m ON m.oid = a.member
JOIN pg_roles r ON r.oid = a.roleid
WHERE m.rolname !~ '^pg_'
ORDER BY 1, 2
"""


def role_findings(rows: Sequence[Any], now: datetime,
                  known: Collection[str] = ()) -> list[Finding]:
    """Unknown login roles, superusers besides the bootstrap one, attributes a role
    should not have, and passwords missing, expired, expiring or never expiring."""
    out = []
    for r in rows:
        name, obj = r["rolname"], f"role {r['rolname']}"
        if not r["bootstrap"]:  # the bootstrap superuser may be and do anything
            if r["rolcanlogin"] and name not in KNOWN_ROLES and name not in known:
                out.append(Finding("unknown_login_role", "P1", obj,
                                   f"{name} can log in and is not one of CardMint's roles",
                                   f"find out who made it; DROP ROLE {name} or ALTER ROLE "
                                   f"{name} NOLOGIN (or name it in CARDMINT_AUDIT_KNOWN_ROLES "
                                   "if it must stay)"))
            out += _attributes(r)
        if r["rolcanlogin"]:
            if not r["has_password"]:
                out.append(Finding("login_without_password", "P1", obj,
                                   f"{name} can log in but has no password (it relies on "
                                   "trust or peer rules alone)",
                                   f"give it a password (`cardmint security rotate --role "
                                   f"{name}`) or ALTER ROLE {name} NOLOGIN"))
            out += _expiry(r, now)
    return out


def _attributes(r: Any) -> list[Finding]:
    name, obj = r["rolname"], f"role {r['rolname']}"
    out = []
    if r["rolsuper"]:
        out.append(Finding("superuser", "P1", obj,
                           f"{name} is a superuser besides the bootstrap role",
                           f"ALTER ROLE {name} NOSUPERUSER"))
        return out  # a superuser has every other power anyway
    if r["rolcreaterole"]:
        out.append(Finding("role_createrole", "P0", obj,
                           f"{name} has CREATEROLE: it can grant itself "
                           "pg_execute_server_program and make roles",
                           f"ALTER ROLE {name} NOCREATEROLE"))
    if r["rolbypassrls"]:
        out.append(Finding("role_bypassrls", "P1", obj,
                           f"{name} has BYPASSRLS: row security does not apply to it",
                           f"ALTER ROLE {name} NOBYPASSRLS"))
    if r["rolreplication"] and name != REPLICATION:
        out.append(Finding("role_replication", "P1", obj,
                           f"{name} has REPLICATION: it can take a base backup, every row",
                           f"ALTER ROLE {name} NOREPLICATION"))
    if r["rolcreatedb"]:
        out.append(Finding("role_createdb", "P0" if name == APP else "P2", obj,
                           f"{name} has CREATEDB", f"ALTER ROLE {name} NOCREATEDB"))
    return out


def _expiry(r: Any, now: datetime) -> list[Finding]:
    name, obj = r["rolname"], f"role {r['rolname']}"
    until = r["rolvaliduntil"]
    rotate = f"`cardmint security rotate --role {name}`"
    if until is None or until.year >= 9999:
        return [Finding("password_without_expiry", "P2", obj,
                        f"{name}'s password never expires", f"{rotate} sets VALID UNTIL")]
    if until <= now:
        return [Finding("password_expired", "P1", obj,
                        f"{name}'s password expired on {until:%Y-%m-%d}: it cannot log in",
                        rotate)]
    if until - now <= EXPIRY_WARNING:
        return [Finding("password_expiring", "P1", obj,
                        f"{name}'s password expires on {until:%Y-%m-%d}, within "
                        f"{EXPIRY_WARNING.days} days", rotate)]
    return []


def membership_findings(rows: Sequence[Any]) -> list[Finding]:
    """Members of the dangerous predefined roles, of a superuser or of a CardMint role,
    and CardMint roles in roles CardMint never grants."""
    out = []
    for r in rows:
        member, granted = r["member"], r["granted"]
        if r["member_is_bootstrap"] or (member, granted) in EXPECTED_MEMBERSHIPS:
            continue
        obj = f"role {member}"
        revoke = f"REVOKE {granted} FROM {member}"
        if granted in DANGEROUS_ROLES:
            severity, power = DANGEROUS_ROLES[granted]
            out.append(Finding("dangerous_membership", severity, obj,
                               f"{member} is a member of {granted}: it can {power}", revoke))
        elif r["granted_is_superuser"]:
            out.append(Finding("superuser_membership", "P0", obj,
                               f"{member} is a member of the superuser {granted}: it can "
                               "SET ROLE to it", revoke))
        elif granted in KNOWN_ROLES:
            out.append(Finding("cardmint_role_granted", "P0" if granted == OWNER else "P1",
                               obj, f"{granted} is granted to {member}: {member} has every "
                               f"privilege of {granted}", revoke))
        elif member in KNOWN_ROLES:
            out.append(Finding("unexpected_membership", "P2", obj,
                               f"{member} is a member of {granted}, which CardMint does not "
                               "grant", revoke))
    return out


APP_ROLE_SQL = """
SELECT (SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relowner = r.oid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')) AS owns,
       (SELECT array_agg(n.nspname ORDER BY n.nspname) FROM pg_namespace n
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
          AND has_schema_privilege(r.oid, n.oid, 'CREATE')) AS can_create_in,
       has_database_privilege(r.oid, current_database(), 'CREATE') AS can_create_schema
FROM pg_roles r WHERE r.rolname = $1
"""


def app_role_findings(rows: Sequence[Any]) -> list[Finding]:
    """The application role owns nothing and can create nothing."""
    if not rows:
        return []
    r = rows[0]
    obj = f"role {APP}"
    out = []
    if r["owns"]:
        out.append(Finding("app_role_owns_objects", "P1", obj,
                           f"the application role owns {', '.join(r['owns'])}: it may alter "
                           "or drop them", f"ALTER TABLE ... OWNER TO {OWNER}"))
    if r["can_create_in"] or r["can_create_schema"]:
        where = ", ".join(r["can_create_in"] or []) or "the database"
        out.append(Finding("app_role_can_create", "P1", obj,
                           f"the application role can CREATE in {where}",
                           f"REVOKE CREATE ON SCHEMA ... FROM {APP} (and PUBLIC); "
                           f"REVOKE CREATE ON DATABASE ... FROM {APP}"))
    return out
