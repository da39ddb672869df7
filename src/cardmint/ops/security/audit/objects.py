"""The audit's view of the application database's objects: grants on tables, sequences,
columns and schemas (every schema, not only public), SECURITY DEFINER functions anyone
may call, default privileges for PUBLIC, and the extensions installed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cardmint.cluster.state import APP, READONLY
from cardmint.ops.security.audit.finding import Finding

USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%'")
# an extension's own objects (pg_stat_statements' view, pg_trgm's functions) are its
# business, not the application's
NOT_FROM_EXTENSION = """NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = '{catalog}'::regclass AND d.objid = {oid}
                    AND d.deptype = 'e')"""

# What \\dp shows, from the catalogs: every grant on relations, in every schema.
PRIVILEGES_SQL = f"""
SELECT n.nspname AS schema, c.relname, c.relkind,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
  AND a.grantee <> c.relowner
  AND {NOT_FROM_EXTENSION.format(catalog="pg_class", oid="c.oid")}
ORDER BY 1, 2, 4, 5
"""

# CardMint grants no column privileges at all: any is someone's doing.
COLUMN_PRIVILEGES_SQL = f"""
SELECT n.nspname AS schema, c.relname, att.attname,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type
FROM pg_attribute att
JOIN pg_class c ON c.oid = att.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(att.attacl) a
WHERE {USER_SCHEMAS} AND att.attnum > 0 AND NOT att.attisdropped
  AND a.grantee <> c.relowner
ORDER BY 1, 2, 3, 4, 5
"""

SCHEMA_PRIVILEGES_SQL = f"""
SELECT n.nspname AS schema,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type
FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
WHERE {USER_SCHEMAS} AND a.grantee <> n.nspowner AND a.privilege_type = 'CREATE'
ORDER BY 1, 2
"""

# SECURITY DEFINER runs as its owner: callable by anyone, it lends the owner's rights.
DEFINER_SQL = f"""
SELECT n.nspname AS schema, p.proname, pg_get_userbyid(p.proowner) AS owner,
       o.rolsuper AS owner_is_superuser
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_roles o ON o.oid = p.proowner
WHERE p.prosecdef AND {USER_SCHEMAS}
  AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                   WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
  AND {NOT_FROM_EXTENSION.format(catalog="pg_proc", oid="p.oid")}
ORDER BY 1, 2
"""

DEFAULT_ACL_SQL = """
SELECT pg_get_userbyid(d.defaclrole) AS role, coalesce(n.nspname, '') AS schema,
       d.defaclobjtype::text AS kind, a.privilege_type
FROM pg_default_acl d
LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) a
WHERE a.grantee = 0
ORDER BY 1, 2, 3, 4
"""
DEFAULT_ACL_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES",
                     "n": "SCHEMAS"}

EXTENSIONS_SQL = """
SELECT e.extname, e.extversion, coalesce(v.trusted, false) AS trusted
FROM pg_extension e
LEFT JOIN pg_available_extension_versions v
  ON v.name = e.extname AND v.version = e.extversion
ORDER BY 1
"""
EXPECTED_EXTENSIONS = frozenset({"plpgsql", "pg_trgm", "pg_stat_statements"})

EXPECTED_GRANTS = {
    APP: {"SELECT", "INSERT", "UPDATE", "DELETE", "USAGE"},
    READONLY: {"SELECT"},
}
READS = {"SELECT", "USAGE"}


def privilege_findings(rows: Sequence[Any]) -> list[Finding]:
    out = []
    for r in rows:
        kind = {"S": "sequence", "v": "view", "m": "view", "f": "foreign table"}.get(
            r["relkind"], "table")
        name = r["relname"] if r["schema"] == "public" else f"{r['schema']}.{r['relname']}"
        obj = f"{kind} {name}"
        grantee, privilege = r["grantee"], r["privilege_type"]
        if grantee == "PUBLIC":
            out.append(Finding("public_privilege", "P1", obj,
                               f"PUBLIC (every role) has {privilege}",
                               f"REVOKE {privilege} ON {name} FROM PUBLIC"))
        elif privilege not in EXPECTED_GRANTS.get(grantee, set()):
            out.append(Finding("unexpected_privilege", "P2" if privilege in READS else "P1",
                               obj, f"{grantee} has {privilege}, which CardMint does not "
                                    "grant", f"REVOKE {privilege} ON {name} FROM {grantee}"))
    return out


def column_findings(rows: Sequence[Any]) -> list[Finding]:
    out = []
    for r in rows:
        name = r["relname"] if r["schema"] == "public" else f"{r['schema']}.{r['relname']}"
        grantee, privilege, column = r["grantee"], r["privilege_type"], r["attname"]
        out.append(Finding("column_privilege", "P2" if privilege == "SELECT" else "P1",
                           f"column {name}.{column}",
                           f"{grantee} has {privilege} on {name}({column}), a column grant "
                           "CardMint never makes",
                           f"REVOKE {privilege} ({column}) ON {name} FROM {grantee}"))
    return out


def schema_findings(rows: Sequence[Any]) -> list[Finding]:
    """CREATE in a schema for someone other than its owner (the application role's own
    case is `app_role_can_create`)."""
    return [Finding("schema_create", "P1", f"schema {r['schema']}",
                    f"{r['grantee']} may CREATE in {r['schema']}: objects there can shadow "
                    "CardMint's",
                    f"REVOKE CREATE ON SCHEMA {r['schema']} FROM {r['grantee']}")
            for r in rows if r["grantee"] != APP]


def definer_findings(rows: Sequence[Any]) -> list[Finding]:
    return [Finding("security_definer_public", "P0" if r["owner_is_superuser"] else "P1",
                    f"function {r['schema']}.{r['proname']}",
                    f"SECURITY DEFINER, owned by {r['owner']}, and anyone may call it: it "
                    f"runs with {r['owner']}'s rights",
                    f"REVOKE EXECUTE ON FUNCTION {r['schema']}.{r['proname']} FROM PUBLIC "
                    "(or make it SECURITY INVOKER)")
            for r in rows]


def default_acl_findings(rows: Sequence[Any]) -> list[Finding]:
    out = []
    for r in rows:
        kind = DEFAULT_ACL_KINDS.get(r["kind"], r["kind"])
        where = f" IN SCHEMA {r['schema']}" if r["schema"] else ""
        out.append(Finding("default_privilege_public", "P1", f"default privileges of "
                                                               f"{r['role']}",
                           f"every new {kind.lower()[:-1]} {r['role']} creates{where} gives "
                           f"PUBLIC {r['privilege_type']}",
                           f"ALTER DEFAULT PRIVILEGES FOR ROLE {r['role']}{where} REVOKE "
                           f"{r['privilege_type']} ON {kind} FROM PUBLIC"))
    return out


def extension_findings(rows: Sequence[Any]) -> list[Finding]:
    out = []
    for r in rows:
        name = r["extname"]
        if name in EXPECTED_EXTENSIONS:
            continue
        if r["trusted"]:
            out.append(Finding("unexpected_extension", "P2", f"extension {name}",
                               f"{name} is installed; CardMint does not use it",
                               f"DROP EXTENSION {name} if nothing needs it"))
        else:
            out.append(Finding("untrusted_extension", "P1", f"extension {name}",
                               f"{name} is installed and is not a trusted extension: its "
                               "functions can reach other servers, files or the OS "
                               "(dblink, file_fdw, adminpack...)",
                               f"DROP EXTENSION {name}; if it must stay, REVOKE EXECUTE on "
                               "its functions FROM PUBLIC"))
    return out
