"""One exception tree for everything CardMint raises on purpose.

Callers handle the kinds differently: the API maps `ValidationError` to a 4xx and
`DatabaseUnavailable` (and its children) to a 503 with Retry-After; the CLI maps
`UsageError` to exit 3. Errors from dependencies (asyncpg, subprocesses) are
translated into these where the dependency is called, nowhere else.
"""

from __future__ import annotations


class CardmintError(Exception):
    """Base of every error CardMint raises on purpose."""


class ConfigError(CardmintError):
    """The settings are missing or contradictory (no cluster, no DSN, a bad value)."""


class NoCluster(ConfigError):
    """No cluster where the settings point (no cluster.json in the home, no DSN given):
    a setting to correct, never an outage to page about."""


class UsageError(CardmintError):
    """A command was asked for something it cannot do as asked (CLI exit 3)."""


class ClusterError(CardmintError):
    """Creating, starting, stopping or inspecting a cluster failed."""


class DatabaseError(CardmintError):
    """A query failed for a reason that is not the caller's input."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailable(DatabaseError):
    """No connection could be had or kept: the API answers 503 with Retry-After."""

    retry_after_s: int = 2


class NoPrimary(DatabaseUnavailable):
    """A write reached a node that is not (or no longer) the primary."""


class PoolExhausted(DatabaseUnavailable):
    """Every pooled connection stayed busy past the acquire timeout."""


class QueryTimeout(DatabaseUnavailable):
    """The statement ran past statement_timeout and was cancelled by the server."""


class PermissionDenied(DatabaseError):
    """The role may not do this to `relation` (a table, view or sequence, when named),
    and no freeze explains it: a grant is missing, or the object is not CardMint's."""

    def __init__(self, message: str, *, relation: str | None = None, role: str | None = None,
                 sqlstate: str | None = None) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.relation, self.role = relation, role


class Frozen(DatabaseUnavailable):
    """A write refused because `cardmint db freeze` withdrew the app role's write
    privileges; reads keep working. The API answers 503 until `cardmint db thaw`."""

    retry_after_s: int = 30


class BackupError(CardmintError):
    """A backup, its verification, pruning or a restore failed."""


class ValidationError(CardmintError):
    """Input that breaks a rule; carries the offending field (the API's 4xx)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConstraintViolation(ValidationError):
    """The database refused a write: a unique, check or foreign key constraint."""

    def __init__(
        self,
        message: str,
        *,
        constraint: str | None = None,
        table: str | None = None,
        sqlstate: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.constraint = constraint
        self.table = table
        self.sqlstate = sqlstate
