"""asyncpg's exceptions translated into CardMint's tree, in this one place.

What a client may be shown (ValidationError and its ConstraintViolation, the API's 422)
carries our words, naming the field or rule, never the server's message: that can hold
the row it refused ("Failing row contains (...)") or the bytes it could not read. The
server's text stays in the other errors, for logs and operators.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Protocol

import asyncpg

from cardmint.dsn import redact
from cardmint.errors import (
    CardmintError,
    ConstraintViolation,
    DatabaseError,
    DatabaseUnavailable,
    Frozen,
    NoPrimary,
    PermissionDenied,
    PoolExhausted,
    QueryTimeout,
    ValidationError,
)

# `cardmint db freeze` records itself as the application database's comment
# (ops/freeze.py); the data layer reads it to tell a freeze from a missing grant.
FREEZE_MARKER = "cardmint:frozen "
FREEZE_COMMENT_SQL = """
SELECT shobj_description(oid, 'pg_database') FROM pg_database
WHERE datname = current_database()
"""
REFUSED_ON = re.compile(r"permission denied for (table|sequence|view) (\S+)")

# Class 22 (a value the column cannot take) in our words, by SQLSTATE.
DATA_MESSAGES = {
    "22001": "a text is longer than its column allows",
    "22003": "a number is out of range",
    "22007": "a date or time is not valid",
    "22008": "a date or time is out of range",
    "22021": "contains a character that cannot be stored (such as NUL)",
    "22P02": "a value is not in the form expected",
    "22P05": "contains a character that cannot be stored",
}

# Losing or not getting a connection: worth one retry for a read, a 503 otherwise.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.ConnectionDoesNotExistError,  # the connection was closed under us
    # what asyncpg raises when the server ended an idle pooled connection (a terminated
    # backend, a restart): the protocol is left in a state it cannot leave
    asyncpg.InternalClientError,
)


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS)


def retryable(exc: BaseException) -> bool:
    """A read that failed like this may succeed on a fresh connection: the connection was
    lost or could not be made. Not a full pool or a timed-out statement: those would
    only wait again."""
    if isinstance(exc, PoolExhausted | QueryTimeout):
        return False
    return is_connection_error(exc) or type(exc) is DatabaseUnavailable


def translate(exc: BaseException, where: str = "") -> CardmintError:
    """The CardMint error for an exception raised by asyncpg (or the socket under it)."""
    if isinstance(exc, CardmintError):
        return exc
    place = f" on {where}" if where else ""
    message = redact(str(exc)) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return NoPrimary(f"a write reached a read-only node{place}: {message}", sqlstate=sqlstate)
    if isinstance(exc, asyncpg.QueryCanceledError):
        return QueryTimeout(f"statement cancelled{place}: {message}", sqlstate=sqlstate)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        constraint = getattr(exc, "constraint_name", None)
        column = getattr(exc, "column_name", None)
        return ConstraintViolation(
            constraint_message(exc, constraint, column), constraint=constraint,
            table=getattr(exc, "table_name", None), sqlstate=sqlstate, field=column)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        # Not Frozen here: a missing grant looks the same. `diagnose` asks the database
        # whether a freeze is in force, where a connection is at hand.
        found = REFUSED_ON.match(message)
        return PermissionDenied(f"{message}{place}", relation=found.group(2) if found else None,
                                sqlstate=sqlstate)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError
                  | asyncpg.InvalidCatalogNameError):  # class 28, 3D000: settings are wrong
        return DatabaseUnavailable(f"cannot connect{place}: {message}", sqlstate=sqlstate)
    if isinstance(exc, asyncpg.DataError):  # class 22: a value the column cannot take
        return ValidationError(DATA_MESSAGES.get(sqlstate or "", "a value is not valid here"),
                               field=getattr(exc, "column_name", None))
    if is_connection_error(exc):
        if isinstance(exc, asyncio.TimeoutError):
            message = "timed out"
        return DatabaseUnavailable(f"database unavailable{place}: {message}", sqlstate=sqlstate)
    return DatabaseError(f"query failed{place}: {message}", sqlstate=sqlstate)


def constraint_message(exc: BaseException, constraint: str | None,
                       column: str | None) -> str:
    """What a refused write broke, in our words: the rule's name is ours (db/schema.py)."""
    rule = f" (rule {constraint})" if constraint else ""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return f"already exists{rule}"
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return f"refers to something that does not exist{rule}"
    if isinstance(exc, asyncpg.NotNullViolationError):
        return f"{column or 'a value'} is required"
    if isinstance(exc, asyncpg.CheckViolationError):
        return f"is not allowed{rule}"
    return f"conflicts with what is stored{rule}"


class Askable(Protocol):
    """A connection, plain or lent by a pool."""

    def is_in_transaction(self) -> bool: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...


async def diagnose(conn: Askable, exc: BaseException, where: str = "") -> CardmintError:
    """`translate`, and for a refused privilege on a table, view or sequence: Frozen when
    `cardmint db freeze` is in force, else PermissionDenied naming the relation and the
    role. `conn` is the connection that was refused, usable again (not in a failed
    transaction); when it cannot be asked, the refusal stays PermissionDenied."""
    error = translate(exc, where)
    if not isinstance(error, PermissionDenied) or error.relation is None:
        return error
    try:
        if conn.is_in_transaction():
            return error
        row = await conn.fetchrow(f"SELECT current_user AS role, ({FREEZE_COMMENT_SQL}) "
                                  "AS comment")
    except asyncpg.PostgresError:
        return error
    except CONNECTION_ERRORS:
        return error
    if row is None:
        return error
    place = f" on {where}" if where else ""
    if (row["comment"] or "").startswith(FREEZE_MARKER):
        return Frozen(f"writes are frozen{place} (`cardmint db freeze`; reads still work): "
                      f"{row['role']} may not write {error.relation}", sqlstate=error.sqlstate)
    kind = REFUSED_ON.match(str(exc))
    return PermissionDenied(
        f"permission denied for {kind.group(1) if kind else 'relation'} {error.relation}"
        f"{place}: role {row['role']} holds no privilege for this (no freeze is in force; "
        "grant it, or this is not one of CardMint's objects)",
        relation=error.relation, role=row["role"], sqlstate=error.sqlstate)


def pool_timeout(where: str, timeout: float) -> PoolExhausted:
    return PoolExhausted(f"no free connection{' on ' + where if where else ''} "
                         f"within {timeout:g} s: the pool is exhausted")
