"""Schema migrations for the CLI: upgrade, downgrade, current, head, revision.

These are synchronous: alembic's env.py runs its own event loop (asyncio.run). From async
code call them in a thread, e.g. `await asyncio.to_thread(migrate.upgrade, dsn)`.

The DSN goes to env.py in `config.attributes`, never into an ini option or a log line;
every error message that may mention it is redacted.
"""

from __future__ import annotations

import asyncio
from argparse import Namespace
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from cardmint import inputs
from cardmint.db.errors import translate
from cardmint.dsn import redact
from cardmint.errors import CardmintError, UsageError

# The migrations inside the installed package, found the way alembic.ini finds them.
SCRIPT_LOCATION = "cardmint:db/migrations"
CONNECT_TIMEOUT_S = 10.0

T = TypeVar("T")


# alembic and SQLAlchemy are imported where they are used: together they cost every
# `cardmint` command ~0.4 s of start-up, and most commands never migrate.


def alembic_config(dsn: str | None = None, *, rev_id: str | None = None) -> Any:
    from alembic.config import Config

    # quiet: alembic would otherwise print "Generating ..." on stdout (breaks --json).
    cfg = Config(cmd_opts=Namespace(quiet=True, x=None, rev_id=rev_id))
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("path_separator", "os")
    if dsn is not None:
        cfg.attributes["dsn"] = dsn
    return cfg


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://", 1)


def _translate(exc: BaseException, dsn: str) -> CardmintError:
    """A CardMint error for anything a migration run raised; messages are redacted."""
    import sqlalchemy.exc
    from alembic.util.exc import CommandError

    if isinstance(exc, CardmintError):
        return exc
    if isinstance(exc, CommandError):
        return UsageError(redact(str(exc)))
    # SQLAlchemy wraps its asyncpg adapter's error, which wraps asyncpg's own.
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig.__cause__ or exc.orig
    return translate(exc, redact(dsn))


def _run(dsn: str, action: Callable[[], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("cardmint.db.migrate runs its own event loop: call it with "
                         "asyncio.to_thread(...) from async code")
    try:
        return action()
    except Exception as exc:
        raise _translate(exc, dsn) from None


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at `dsn` up to `revision` (all pending migrations by default)."""
    from alembic import command

    _run(dsn, lambda: command.upgrade(alembic_config(dsn), revision))


def downgrade(dsn: str, revision: str) -> None:
    """Migrate the database at `dsn` down to `revision` ("base" removes everything)."""
    from alembic import command

    _run(dsn, lambda: command.downgrade(alembic_config(dsn), revision))


def current(dsn: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""

    async def read() -> str | None:
        conn = await asyncpg.connect(_plain(dsn), timeout=CONNECT_TIMEOUT_S)
        try:
            rows = await conn.fetch("SELECT version_num FROM alembic_version ORDER BY 1")
        except asyncpg.UndefinedTableError:
            return None
        finally:
            await conn.close()
        return ",".join(r["version_num"] for r in rows) or None

    return _run(dsn, lambda: asyncio.run(read()))


def head() -> str:
    """The newest revision shipped with this package."""
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if rev is None:
        raise UsageError("no migrations found in the cardmint package")
    return rev


def next_revision_id() -> str:
    """The id a new revision gets: the head's number plus one (0001 -> 0002)."""
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if rev is None:
        return "0001"
    if not inputs.is_digits(rev):
        raise UsageError(f"head revision {rev!r} is not numbered; pass a revision id")
    return f"{int(rev) + 1:0{len(rev)}d}"


def revision(dsn: str, message: str, autogenerate: bool = True) -> str:
    """Write a new migration script and return its path.

    With `autogenerate`, the database at `dsn` must be at head; the script then holds the
    differences between it and cardmint.db.schema. Review it before committing: renames
    look like drop + add, and triggers, functions and extensions are not detected.
    """
    rev_id = next_revision_id()

    def write() -> str:
        from alembic import command

        cfg = alembic_config(dsn, rev_id=rev_id)
        script = command.revision(cfg, message=message, autogenerate=autogenerate,
                                  rev_id=rev_id)
        scripts = script if isinstance(script, list) else [script]
        if not scripts or scripts[0] is None:
            raise UsageError("alembic wrote no revision")
        return str(scripts[0].path)

    return _run(dsn, write)
