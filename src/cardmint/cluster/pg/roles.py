"""Database roles of a CardMint cluster and the SQL that creates them.

Passwords are sent as SCRAM-SHA-256 verifiers computed here, never as plain text, so
no statement text (server log, pg_stat_statements) ever holds a usable password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _random
from datetime import UTC, datetime, timedelta

from cardmint.cluster.state import APP, MONITOR, OWNER, READONLY, REPLICATION, ROLES, SUPERUSER

PASSWORD_VALID_DAYS = 100  # the quarterly rotation renews it before it lapses
SCRAM_ITERATIONS = 4096


def new_password() -> str:
    """32 random bytes, URL-safe base64: strong, and safe inside a DSN or conf string."""
    return _random.token_urlsafe(32)


def new_passwords() -> dict[str, str]:
    return {role: new_password() for role in ROLES}


def scram_verifier(password: str, *, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The value PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677)."""
    salt = salt if salt is not None else _random.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def literal(text: str) -> str:
    """A SQL string literal (utility statements take no bind parameters)."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def valid_until(now: datetime | None = None) -> str:
    return ((now or datetime.now(UTC)) + timedelta(days=PASSWORD_VALID_DAYS)).isoformat()


def cluster_sql(passwords: dict[str, str], database: str) -> list[str]:
    """Run as the superuser on the `postgres` database of a new primary."""
    until = literal(valid_until())

    def pw(role: str) -> str:
        return literal(scram_verifier(passwords[role]))

    return [
        # every login role expires: the quarterly rotation (`security rotate`) renews them
        f"ALTER ROLE {SUPERUSER} PASSWORD {pw(SUPERUSER)} VALID UNTIL {until}",
        f"CREATE ROLE {OWNER} LOGIN PASSWORD {pw(OWNER)} VALID UNTIL {until}",
        f"CREATE ROLE {APP} LOGIN PASSWORD {pw(APP)} VALID UNTIL {until}",
        f"CREATE ROLE {READONLY} LOGIN PASSWORD {pw(READONLY)} VALID UNTIL {until}",
        f"CREATE ROLE {REPLICATION} LOGIN REPLICATION PASSWORD {pw(REPLICATION)} "
        f"VALID UNTIL {until}",
        f"CREATE ROLE {MONITOR} LOGIN PASSWORD {pw(MONITOR)} VALID UNTIL {until}",
        f"GRANT pg_monitor TO {MONITOR}",
        f"CREATE DATABASE {ident(database)} OWNER {OWNER}",
        f"REVOKE ALL ON DATABASE {ident(database)} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {ident(database)} TO {APP}, {READONLY}, {MONITOR}",
    ]


def database_sql() -> list[str]:
    """Run as the superuser inside the application database: the extension only a
    superuser may create, and the privileges every table the owner creates will carry."""
    grant = f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public GRANT"
    return [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {APP}, {READONLY}, {MONITOR}",
        f"{grant} SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP}",
        f"{grant} USAGE, SELECT ON SEQUENCES TO {APP}",
        f"{grant} SELECT ON TABLES TO {READONLY}",
        f"{grant} SELECT ON SEQUENCES TO {READONLY}",
    ]
