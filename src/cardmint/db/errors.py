"""asyncpg's exceptions translated into CardMint's tree, in this one place."""

from __future__ import annotations

import asyncio

import asyncpg

from cardmint.dsn import redact
from cardmint.errors import (
    CardmintError,
    ConstraintViolation,
    DatabaseError,
    DatabaseUnavailable,
    Frozen,
    NoPrimary,
    PoolExhausted,
    QueryTimeout,
    ValidationError,
)

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
        detail = getattr(exc, "detail", None)
        return ConstraintViolation(
            f"{message}{': ' + detail if detail else ''}",
            constraint=getattr(exc, "constraint_name", None),
            table=getattr(exc, "table_name", None),
            sqlstate=sqlstate,
            field=getattr(exc, "column_name", None),
        )
    if isinstance(exc, asyncpg.InsufficientPrivilegeError) and message.startswith(
            ("permission denied for table", "permission denied for sequence",
             "permission denied for view")):
        # The app role holds DML on every table and sequence (default privileges), so
        # a refusal on one means its write privileges were withdrawn, which is what
        # `cardmint db freeze` does (reads are never withdrawn): a 503, not a bug.
        return Frozen(f"writes are frozen{place} (`cardmint db freeze`; reads still work): "
                      f"{message}", sqlstate=sqlstate)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError
                  | asyncpg.InvalidCatalogNameError):  # class 28, 3D000: settings are wrong
        return DatabaseUnavailable(f"cannot connect{place}: {message}", sqlstate=sqlstate)
    if isinstance(exc, asyncpg.DataError):  # class 22: a value the column cannot take
        return ValidationError(message, field=getattr(exc, "column_name", None))
    if is_connection_error(exc):
        if isinstance(exc, asyncio.TimeoutError):
            message = "timed out"
        return DatabaseUnavailable(f"database unavailable{place}: {message}", sqlstate=sqlstate)
    return DatabaseError(f"query failed{place}: {message}", sqlstate=sqlstate)


def pool_timeout(where: str, timeout: float) -> PoolExhausted:
    return PoolExhausted(f"no free connection{' on ' + where if where else ''} "
                         f"within {timeout:g} s: the pool is exhausted")
