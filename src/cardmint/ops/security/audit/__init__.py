"""`cardmint security audit`: the runbook's monthly audit, from the servers' catalogs and
the cluster's files. Read-only; it runs as the superuser (pg_authid, pg_hba_file_rules and
the server logs need it).

What it covers (each finding names the object, what is wrong, a severity and the fix):

- roles (`roles.py`): login roles that are not CardMint's; superusers besides the
  bootstrap one; CREATEROLE, CREATEDB, BYPASSRLS, REPLICATION where they do not belong;
  passwords missing, expired, expiring or never expiring; members of
  pg_execute_server_program, pg_write_server_files, pg_read_server_files,
  pg_write_all_data, pg_read_all_data, of a superuser or of a CardMint role;
- objects (`objects.py`): grants on tables, views and sequences in every schema, column
  grants, CREATE on a schema, SECURITY DEFINER functions anyone may call, default
  privileges for PUBLIC, extensions that are untrusted or unexpected; what the
  application role owns or may create;
- every node (`node.py`), the primary and each replica: every pg_hba.conf rule (trust,
  password, md5, ident of any type, hostnossl, host beyond loopback); settings that put
  statements and their values in the log, and password_encryption, on the node and per
  role or database; passwords in the server log and in pg_stat_statements; sessions
  without TLS, of unknown applications, idle in a transaction;
- secrets at rest (`files.py`): the mode of every secret store of the home, backups/,
  passwords in the servers' start-up logs;
- API tokens (`tokens.py`): admin tokens (how many, how old, last used), tokens unused
  for 90 days.

P0 is a takeover or data-loss risk now, P1 a weakness an attacker could use, P2 hygiene.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from cardmint import secretfile
from cardmint.cluster.state import APP, load
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.dsn import password_of, username, with_password, with_user
from cardmint.errors import CardmintError, ConfigError
from cardmint.ops.security.audit import files, node, objects, roles, tokens
from cardmint.ops.security.audit.finding import AuditReport, Finding
from cardmint.ops.security.audit.node import session_findings

__all__ = ["AuditReport", "Finding", "audit", "session_findings"]


async def audit(settings: Settings, *, now: datetime | None = None) -> AuditReport:
    dsn = secret(settings.admin_url)
    if not dsn:
        raise ConfigError("the audit needs the superuser's DSN: set CARDMINT_ADMIN_URL or run "
                          "`cardmint cluster up`")
    now = now or datetime.now(UTC)
    known = _known_passwords(settings)
    report = AuditReport(findings=[], audited_at=now)
    async with connection(dsn, settings, application="cardmint-audit") as conn:
        report.findings += await _catalog(conn, settings, now)
        report.tokens, token_found = await _tokens(conn, now)
        report.findings += token_found
    sessions: list[Any] = []
    for name, node_dsn in _nodes(settings, dsn):
        try:
            async with connection(node_dsn, settings, application="cardmint-audit",
                                  where=name) as conn:
                report.findings += await _node(conn, name, known)
                sessions += [{**dict(r), "node": name}
                             for r in await conn.fetch(node.SESSIONS_SQL)]
            report.nodes.append(name)
        except CardmintError as exc:
            report.findings.append(Finding(
                "node_not_audited", "P1", f"node {name}", f"could not be audited: {exc}",
                "start it or fix its address, then audit again"))
    report.findings += files.file_findings(settings.home)
    report.findings += files.start_up_log_findings(settings.home, known)
    report.connections = _summary(sessions)
    return report


async def _catalog(conn: asyncpg.Connection, settings: Settings,
                   now: datetime) -> list[Finding]:
    """Roles and the application database's objects: replicated, so read on the primary."""
    return [
        *roles.role_findings(await conn.fetch(roles.ROLES_SQL), now,
                             settings.audit_known_roles),
        *roles.membership_findings(await conn.fetch(roles.MEMBERSHIPS_SQL)),
        *roles.app_role_findings(await conn.fetch(roles.APP_ROLE_SQL, APP)),
        *objects.privilege_findings(await conn.fetch(objects.PRIVILEGES_SQL)),
        *objects.column_findings(await conn.fetch(objects.COLUMN_PRIVILEGES_SQL)),
        *objects.schema_findings(await conn.fetch(objects.SCHEMA_PRIVILEGES_SQL)),
        *objects.definer_findings(await conn.fetch(objects.DEFINER_SQL)),
        *objects.default_acl_findings(await conn.fetch(objects.DEFAULT_ACL_SQL)),
        *objects.extension_findings(await conn.fetch(objects.EXTENSIONS_SQL)),
        *node.role_settings_findings(await conn.fetch(node.ROLE_SETTINGS_SQL,
                                                      list(node.LOG_SETTINGS))),
    ]


async def _tokens(conn: asyncpg.Connection, now: datetime
                  ) -> tuple[dict[str, Any], list[Finding]]:
    try:
        rows = await conn.fetch(tokens.TOKENS_SQL)
    except asyncpg.UndefinedTableError:
        return {}, []  # not migrated yet: no tokens to audit
    return tokens.token_summary(rows, now), tokens.token_findings(rows, now)


async def _node(conn: asyncpg.Connection, name: str, known: dict[str, str]) -> list[Finding]:
    values = {r["name"]: r["setting"] for r in await conn.fetch(node.SETTINGS_SQL,
                                                                list(node.LOG_SETTINGS))}
    return [
        *node.hba_findings(await conn.fetch(node.HBA_SQL), name),
        *node.settings_findings(values, f"on {name}"),
        *node.password_findings(await node.server_logs(conn), known, name, "log"),
        *node.password_findings(await node.statements(conn), known, name, "statements"),
        *session_findings(await conn.fetch(node.SESSIONS_SQL), name),
    ]


def _nodes(settings: Settings, admin_dsn: str) -> list[tuple[str, str]]:
    """(name, superuser DSN) of every node: the hosts of the monitoring DSNs (one per
    node, from the cluster or CARDMINT_MONITOR_URLS) with the superuser's credentials;
    without them, the admin DSN's own node."""
    user, password = username(admin_dsn), password_of(admin_dsn)
    state = load(settings.home) if settings.home.is_dir() else None
    names = {f"{n.host}:{n.port}": n.name for n in state.nodes} if state else {}
    found = []
    for monitor in (s.get_secret_value() for s in settings.monitor_urls):
        dsn = with_user(monitor, user) if user else monitor
        dsn = with_password(dsn, password) if password else dsn
        where = urlsplit(monitor).netloc.rsplit("@", 1)[-1]
        found.append((names.get(where, where), dsn))
    return found or [(urlsplit(admin_dsn).netloc.rsplit("@", 1)[-1], admin_dsn)]


def _known_passwords(settings: Settings) -> dict[str, str]:
    """The secrets file's passwords, by role, to look for in logs (never shown)."""
    prefix = secretfile.role_key("")
    return {key.removeprefix(prefix).lower() or key: value
            for key, value in secretfile.read(settings.secrets_path).items() if value}


def _summary(rows: list[Any]) -> list[dict[str, Any]]:
    """Connections by node, user, application and client address (the runbook's second
    query)."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for r in rows:
        key = (r["node"], r["usename"] or "", r["application_name"] or "",
               r["client_addr"] or "local")
        counts[key] = counts.get(key, 0) + 1
    return [{"node": n, "user": u, "application": a, "client_addr": c, "count": k}
            for (n, u, a, c), k in sorted(counts.items())]
