"""`cardmint security audit`: the runbook's monthly audit, from the server's catalogs.

Each finding names the object, what is wrong and the fix. Severities follow the runbook:
P0 data-loss or takeover risk now, P1 a weakness an attacker could use, P2 hygiene.
The audit runs as the superuser (pg_authid and pg_hba_file_rules need it), read-only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from cardmint.cluster.state import APP, MONITOR, OWNER, READONLY, REPLICATION
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.errors import ConfigError
from cardmint.ops.incidents.severity import most_severe

EXPIRY_WARNING = timedelta(days=14)
KNOWN_ROLES = {OWNER, APP, READONLY, REPLICATION, MONITOR}
# Applications we expect to see connected: ours, and people with psql.
KNOWN_APPLICATIONS = ("cardmint", "psql", "pg_dump", "pg_basebackup", "alembic")
STATUS_BY_SEVERITY = {None: "ok", "P2": "warn", "P1": "critical", "P0": "critical"}
EXIT_BY_STATUS = {"ok": 0, "warn": 1, "critical": 2}


@dataclass
class Finding:
    id: str
    severity: str
    object: str
    detail: str
    fix: str


@dataclass
class AuditReport:
    findings: list[Finding]
    connections: list[dict[str, Any]] = field(default_factory=list)
    audited_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def status(self) -> str:
        return STATUS_BY_SEVERITY[most_severe([f.severity for f in self.findings])]

    @property
    def exit_code(self) -> int:
        return EXIT_BY_STATUS[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "findings": [asdict(f) for f in self.findings],
                "connections": self.connections, "audited_at": self.audited_at.isoformat()}


async def audit(settings: Settings, *, now: datetime | None = None) -> AuditReport:
    dsn = secret(settings.admin_url)
    if not dsn:
        raise ConfigError("the audit needs the superuser's DSN: set CARDMINT_ADMIN_URL or run "
                          "`cardmint cluster up`")
    now = now or datetime.now(UTC)
    async with connection(dsn, settings, application="cardmint-audit") as conn:
        findings = [
            *role_findings(await conn.fetch(ROLES_SQL), now),
            *app_role_findings(await conn.fetch(APP_ROLE_SQL, APP)),
            *privilege_findings(await conn.fetch(PRIVILEGES_SQL)),
            *hba_findings(await conn.fetch(HBA_SQL)),
            *settings_findings(await conn.fetchval("SHOW password_encryption")),
        ]
        sessions = await conn.fetch(SESSIONS_SQL)
    findings += session_findings(sessions)
    summary = _summary(sessions)
    return AuditReport(findings, summary, now)


ROLES_SQL = """
SELECT rolname, rolsuper, rolcanlogin, rolpassword IS NOT NULL AS has_password,
       rolvaliduntil, oid = 10 AS bootstrap
FROM pg_authid WHERE rolname !~ '^pg_' ORDER BY rolname
"""


def role_findings(rows: list[Any], now: datetime) -> list[Finding]:
    out = []
    for r in rows:
        name = r["rolname"]
        if r["rolsuper"] and not r["bootstrap"]:
            out.append(Finding("superuser", "P1", f"role {name}",
                               f"{name} is a superuser besides the bootstrap role",
                               f"ALTER ROLE {name} NOSUPERUSER"))
        if not r["rolcanlogin"]:
            continue
        if not r["has_password"]:
            out.append(Finding("login_without_password", "P1", f"role {name}",
                               f"{name} can log in but has no password (it relies on trust "
                               "or peer rules alone)",
                               f"give it a password (`cardmint security rotate --role {name}`) "
                               "or ALTER ROLE ... NOLOGIN"))
        until = r["rolvaliduntil"]
        if until is None or until.year >= 9999:
            out.append(Finding("password_without_expiry", "P2", f"role {name}",
                               f"{name}'s password never expires",
                               f"`cardmint security rotate --role {name}` sets VALID UNTIL"))
        elif until <= now:
            out.append(Finding("password_expired", "P1", f"role {name}",
                               f"{name}'s password expired on {until:%Y-%m-%d}: it cannot log "
                               "in", f"`cardmint security rotate --role {name}`"))
        elif until - now <= EXPIRY_WARNING:
            out.append(Finding("password_expiring", "P1", f"role {name}",
                               f"{name}'s password expires on {until:%Y-%m-%d}, within "
                               f"{EXPIRY_WARNING.days} days",
                               f"`cardmint security rotate --role {name}`"))
    return out


APP_ROLE_SQL = """
SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb,
       (SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relowner = r.oid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')) AS owns,
       (SELECT array_agg(n.nspname ORDER BY n.nspname) FROM pg_namespace n
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
          AND has_schema_privilege(r.oid, n.oid, 'CREATE')) AS can_create_in,
       has_database_privilege(r.oid, current_database(), 'CREATE') AS can_create_schema
FROM pg_roles r WHERE r.rolname = $1
"""


def app_role_findings(rows: list[Any]) -> list[Finding]:
    if not rows:
        return []
    r = rows[0]
    obj = f"role {APP}"
    out = []
    if r["rolsuper"] or r["rolcreaterole"] or r["rolcreatedb"]:
        out.append(Finding("app_role_privileged", "P0", obj,
                           "the application role has SUPERUSER/CREATEROLE/CREATEDB",
                           f"ALTER ROLE {APP} NOSUPERUSER NOCREATEROLE NOCREATEDB"))
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


# What \\dp shows, from the catalogs: every grant on application tables and sequences.
PRIVILEGES_SQL = """
SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) AS owner,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
  AND a.grantee <> c.relowner
  -- an extension's own views (pg_stat_statements) are its business, not the application's
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY c.relname, grantee, a.privilege_type
"""

EXPECTED_GRANTS = {
    APP: {"SELECT", "INSERT", "UPDATE", "DELETE", "USAGE"},
    READONLY: {"SELECT"},
}


def privilege_findings(rows: list[Any]) -> list[Finding]:
    out = []
    for r in rows:
        obj = f"{'sequence' if r['relkind'] == 'S' else 'table'} {r['relname']}"
        grantee, privilege = r["grantee"], r["privilege_type"]
        if grantee == "PUBLIC":
            out.append(Finding("public_privilege", "P1", obj,
                               f"PUBLIC (every role) has {privilege}",
                               f"REVOKE {privilege} ON {r['relname']} FROM PUBLIC"))
        elif privilege not in EXPECTED_GRANTS.get(grantee, set()):
            out.append(Finding("unexpected_privilege", "P2", obj,
                               f"{grantee} has {privilege}, which CardMint does not grant",
                               f"REVOKE {privilege} ON {r['relname']} FROM {grantee}"))
    return out


HBA_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules ORDER BY line_number
"""


def _loopback(address: str | None) -> bool:
    if address in (None, "localhost", "samehost"):
        return address is not None
    try:
        network = ipaddress.ip_network(address, strict=False)
        if isinstance(network, ipaddress.IPv6Network):
            return network.subnet_of(ipaddress.IPv6Network("::1/128"))
        return network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    except (ValueError, TypeError):
        return False


def hba_findings(rows: list[Any]) -> list[Finding]:
    out = []
    for r in rows:
        obj = f"pg_hba.conf line {r['line_number']}"
        if r["error"]:
            out.append(Finding("hba_error", "P1", obj, f"rule is invalid: {r['error']}",
                               "fix or remove the line, then reload"))
            continue
        if r["type"] == "local":
            continue  # the maintenance socket: reachable only through the file system
        method, remote = r["auth_method"], not _loopback(r["address"])
        who = f"{','.join(r['user_name'] or [])}@{','.join(r['database'] or [])}"
        if method == "trust":
            out.append(Finding("hba_trust", "P0" if remote else "P1", obj,
                               f"trust (no password) for {who} from {r['address']}",
                               "use scram-sha-256"))
        elif method in ("md5", "password") and remote:
            out.append(Finding("hba_weak_method", "P1", obj,
                               f"{method} for {who} from {r['address']}: not SCRAM",
                               "use scram-sha-256 (and hostssl for remote clients)"))
        if remote and r["type"] == "host":
            out.append(Finding("hba_remote_without_tls", "P1", obj,
                               f"{who} may connect from {r['address']} without TLS",
                               "use hostssl for non-loopback addresses"))
    return out


def settings_findings(password_encryption: str) -> list[Finding]:
    if password_encryption != "scram-sha-256":
        return [Finding("password_encryption", "P1", "setting password_encryption",
                        f"new passwords are stored as {password_encryption}",
                        "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; "
                        "then rotate every password")]
    return []


SESSIONS_SQL = """
SELECT a.pid, a.usename, a.application_name, a.client_addr::text AS client_addr, a.state,
       coalesce(s.ssl, false) AS ssl,
       extract(epoch FROM now() - a.state_change)::float8 AS state_age_s
FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
ORDER BY a.usename, a.application_name
"""


def session_findings(rows: list[Any]) -> list[Finding]:
    out = []
    for r in rows:
        obj = f"session {r['pid']} ({r['usename']}, {r['application_name'] or 'no name'})"
        if r["client_addr"] and not _loopback(r["client_addr"]) and not r["ssl"]:
            out.append(Finding("connection_without_tls", "P1", obj,
                               f"connected from {r['client_addr']} without TLS",
                               "require hostssl in pg_hba.conf; clients sslmode=verify-full"))
        app = r["application_name"] or ""
        if not app.startswith(KNOWN_APPLICATIONS):
            out.append(Finding("unknown_application", "P2", obj,
                               f"application {app or '(none)'} is not one CardMint knows",
                               "identify it; name your clients (application_name)"))
        if (r["state"] or "").startswith("idle in transaction"):
            out.append(Finding("idle_in_transaction", "P2", obj,
                               f"idle in transaction for {r['state_age_s']:.0f} s: it holds "
                               "locks and snapshots", "end it (pg_terminate_backend) and fix "
                                                      "the client; set "
                                                      "idle_in_transaction_session_timeout"))
    return out


def _summary(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Connections by user, application and client address (the runbook's second query)."""
    counts: dict[tuple[str, str, str], int] = {}
    for r in rows:
        key = (r["usename"] or "", r["application_name"] or "", r["client_addr"] or "local")
        counts[key] = counts.get(key, 0) + 1
    return [{"user": u, "application": a, "client_addr": c, "count": n}
            for (u, a, c), n in sorted(counts.items())]
