"""What the audit asks each node (the primary and every replica): its pg_hba.conf rules,
the settings that decide what its log exposes, passwords in its server log and in
pg_stat_statements, and its sessions. A replica has its own pg_hba.conf and its own
settings (ALTER SYSTEM there is not replicated), so each is read where it applies."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from cardmint.ops.security.audit.finding import Finding

# Applications we expect to see connected: ours, and people with psql.
KNOWN_APPLICATIONS = ("cardmint", "psql", "pg_dump", "pg_basebackup", "alembic")

HBA_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules ORDER BY line_number
"""
# Who would be let in without proving anything, or with a password sent or stored weakly.
WEAK_METHODS = {
    "trust": ("P0", "no password at all", "use scram-sha-256"),
    "password": ("P1", "the password sent in clear text", "use scram-sha-256"),
    "md5": ("P1", "MD5, not SCRAM", "use scram-sha-256 (then rotate the passwords)"),
    "ident": ("P1", "the client's word for its OS user (identd)",
              "use scram-sha-256 (or peer on the local socket)"),
}

# What decides how much the server log holds: the statements, and their values.
LOG_SETTINGS = ("password_encryption", "log_statement", "log_min_duration_statement",
                "log_parameter_max_length", "log_min_duration_sample",
                "log_statement_sample_rate", "log_transaction_sample_rate",
                "debug_print_parse", "debug_print_rewritten", "debug_print_plan")
SETTINGS_SQL = "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])"
# ... and the same set per role or per database, which is easy to miss
ROLE_SETTINGS_SQL = """
SELECT coalesce(r.rolname, '') AS role, coalesce(d.datname, '') AS database,
       split_part(c, '=', 1) AS name, substr(c, strpos(c, '=') + 1) AS setting
FROM pg_db_role_setting s
LEFT JOIN pg_roles r ON r.oid = s.setrole
LEFT JOIN pg_database d ON d.oid = s.setdatabase
CROSS JOIN LATERAL unnest(s.setconfig) c
WHERE split_part(c, '=', 1) = ANY($1::text[])
"""
FAST_MS = 1000  # statements faster than this logged: nearly all of them

# Text that is a password (never a SCRAM or MD5 verifier, never a mask): in a statement
# or a logged setting. Only patterns leave the server: never a password itself.
PASSWORD_PATTERNS = {
    "a password in a connection string": re.compile(
        rb"(?i)\bpassword\s*=\s*(?!\*\*\*)['\"]?[^\s'\"*]"),
    "a plain-text PASSWORD literal": re.compile(
        rb"(?i)\bpassword\s+'(?!SCRAM-SHA-256\$|md5[0-9a-f]{32}')[^']"),
    "a password in a URL": re.compile(
        rb"postgres(?:ql)?://[^:/@\s\"']+:(?!\*\*\*@)[^@\s\"']+@"),
}
STATEMENTS_SQL = "SELECT query FROM pg_stat_statements"
LOG_FILES_SQL = """
SELECT name, size, current_setting('log_directory') AS directory FROM pg_ls_logdir()
ORDER BY modification DESC LIMIT $1
"""
LOG_FILES, LOG_TAIL_BYTES = 20, 8 * 1024 * 1024  # the newest files' last 8 MB each

SESSIONS_SQL = """
SELECT a.pid, a.usename, a.application_name, a.client_addr::text AS client_addr, a.state,
       coalesce(s.ssl, false) AS ssl,
       extract(epoch FROM now() - a.state_change)::float8 AS state_age_s
FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
ORDER BY a.usename, a.application_name
"""


def loopback(address: str | None) -> bool:
    if address in (None, "localhost", "samehost"):
        return address is not None
    try:
        network = ipaddress.ip_network(address, strict=False)
        if isinstance(network, ipaddress.IPv6Network):
            return network.subnet_of(ipaddress.IPv6Network("::1/128"))
        return network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    except (ValueError, TypeError):
        return False


def hba_findings(rows: Sequence[Any], node: str = "") -> list[Finding]:
    """Every rule of every type (the local socket's too): trust, password, md5 and ident
    anywhere; hostnossl; host (TLS optional) beyond loopback."""
    on = f" on {node}" if node else ""
    out = []
    for r in rows:
        obj = f"pg_hba.conf line {r['line_number']}{on}"
        if r["error"]:
            out.append(Finding("hba_error", "P1", obj, f"rule is invalid: {r['error']}",
                               "fix or remove the line, then reload"))
            continue
        kind, method = r["type"], r["auth_method"]
        remote = kind != "local" and not loopback(r["address"])
        where = "the local socket" if kind == "local" else f"{r['address']}"
        who = f"{','.join(r['user_name'] or [])}@{','.join(r['database'] or [])}"
        if method in WEAK_METHODS:
            severity, what, fix = WEAK_METHODS[method]
            if method in ("md5", "password", "ident") and not remote:
                severity = "P2" if method == "md5" else "P1"
            out.append(Finding(f"hba_{method}", severity, obj,
                               f"{kind} {who} from {where}: {what}", fix))
        if kind == "hostnossl":
            out.append(Finding("hba_nossl", "P1" if remote else "P2", obj,
                               f"{who} from {where} only without TLS",
                               "remove the line; use hostssl"))
        elif remote and kind == "host":
            out.append(Finding("hba_remote_without_tls", "P1", obj,
                               f"{who} may connect from {where} without TLS",
                               "use hostssl for non-loopback addresses"))
    return out


def settings_findings(values: dict[str, str], where: str) -> list[Finding]:
    """The settings that put statements, with their values, in the server log; and the
    password storage. `where` names the node, role or database they are set for."""
    out = []

    def add(id_: str, severity: str, name: str, detail: str, fix: str) -> None:
        out.append(Finding(id_, severity, f"setting {name} {where}".strip(), detail, fix))

    encryption = values.get("password_encryption")
    if encryption not in (None, "scram-sha-256"):
        add("password_encryption", "P1", "password_encryption",
            f"new passwords are stored as {encryption}",
            "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; then rotate every "
            "password")
    statement = values.get("log_statement")
    if statement in ("all", "mod"):
        add("log_statement", "P1", "log_statement",
            f"log_statement = '{statement}': every {'statement' if statement == 'all' else 'write'}"
            ", with the values in it, goes to the server log",
            "ALTER SYSTEM SET log_statement = 'none' (or RESET it)")
    elif statement == "ddl":
        add("log_statement", "P2", "log_statement",
            "log_statement = 'ddl': a role's password typed in CREATE or ALTER ROLE is logged",
            "ALTER SYSTEM SET log_statement = 'none'")
    params = _number(values.get("log_parameter_max_length")) != 0
    with_params = " with their parameters" if params else ""
    duration = _number(values.get("log_min_duration_statement"))
    if duration is not None and 0 <= duration < FAST_MS:
        add("log_min_duration_statement", "P1" if params else "P2",
            "log_min_duration_statement",
            f"statements of {duration:g} ms or more are logged{with_params}: nearly all",
            f"ALTER SYSTEM SET log_min_duration_statement = '{FAST_MS}ms' (or -1)")
    sample = _number(values.get("log_min_duration_sample"))
    rate = _number(values.get("log_statement_sample_rate"))
    if sample is not None and 0 <= sample < FAST_MS and (rate or 0) > 0:
        add("log_min_duration_sample", "P1" if params else "P2", "log_min_duration_sample",
            f"a sample of statements of {sample:g} ms or more is logged{with_params}",
            "ALTER SYSTEM SET log_min_duration_sample = -1")
    if (_number(values.get("log_transaction_sample_rate")) or 0) > 0:
        add("log_transaction_sample_rate", "P1", "log_transaction_sample_rate",
            "every statement of a sample of transactions is logged, with its values",
            "ALTER SYSTEM SET log_transaction_sample_rate = 0")
    for name in ("debug_print_parse", "debug_print_rewritten", "debug_print_plan"):
        if values.get(name) == "on":
            add("debug_print", "P2", name, f"{name} logs every query's tree, constants in",
                f"ALTER SYSTEM SET {name} = off")
    return out


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def role_settings_findings(rows: Sequence[Any]) -> list[Finding]:
    """The log settings set for a role or a database (ALTER ROLE/DATABASE ... SET)."""
    grouped: dict[str, dict[str, str]] = {}
    for r in rows:
        where = " ".join(p for p in (f"for role {r['role']}" if r["role"] else "",
                                     f"in database {r['database']}" if r["database"] else "")
                         if p)
        grouped.setdefault(where, {})[r["name"]] = r["setting"]
    return [f for where, values in grouped.items() for f in settings_findings(values, where)]


def password_findings(texts: Iterable[tuple[str, bytes]], known: dict[str, str],
                      node: str, what: str) -> list[Finding]:
    """A finding per (place, text) holding a password: a known one (the secrets file's,
    by role) or text shaped like one. Neither the text nor the password is repeated."""
    secrets = [(role, value.encode()) for role, value in known.items() if len(value) >= 8]
    found: dict[str, set[str]] = {}
    for place, text in texts:
        kinds = {kind for kind, pattern in PASSWORD_PATTERNS.items() if pattern.search(text)}
        kinds |= {f"the password of {role}" for role, value in secrets if value in text}
        if kinds:
            found.setdefault(place, set()).update(kinds)
    return [Finding("password_in_" + ("log" if what == "log" else "statements"), "P0",
                    f"{place} on {node}" if node else place,
                    f"holds {', '.join(sorted(kinds))}: readable by "
                    + ("whoever reads the server's logs" if what == "log" else
                       "the monitoring role (pg_read_all_stats)"),
                    "rotate those passwords (`cardmint security rotate`), then "
                    + ("remove or truncate the log file" if what == "log" else
                       "SELECT pg_stat_statements_reset()"))
            for place, kinds in sorted(found.items())]


async def statements(conn: asyncpg.Connection) -> list[tuple[str, bytes]]:
    try:
        rows = await conn.fetch(STATEMENTS_SQL)
    except (asyncpg.UndefinedTableError, asyncpg.ObjectNotInPrerequisiteStateError):
        return []  # pg_stat_statements not loaded, or not in this database
    return [("pg_stat_statements", "\n".join(r["query"] or "" for r in rows).encode())]


async def server_logs(conn: asyncpg.Connection) -> list[tuple[str, bytes]]:
    """The newest server log files' tails, read through the server (so a remote node's
    log is read too)."""
    out = []
    for f in await conn.fetch(LOG_FILES_SQL, LOG_FILES):
        offset = max(0, f["size"] - LOG_TAIL_BYTES)
        path = f"{f['directory']}/{f['name']}"
        try:
            data = await conn.fetchval("SELECT pg_read_binary_file($1, $2, $3, true)", path,
                                       offset, LOG_TAIL_BYTES)
        except asyncpg.PostgresError:
            continue  # rotated away meanwhile
        out.append((f"server log {f['name']}", bytes(data or b"")))
    return out


def session_findings(rows: Sequence[Any], node: str = "") -> list[Finding]:
    on = f" on {node}" if node else ""
    out = []
    for r in rows:
        obj = f"session {r['pid']} ({r['usename']}, {r['application_name'] or 'no name'}){on}"
        if r["client_addr"] and not loopback(r["client_addr"]) and not r["ssl"]:
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
