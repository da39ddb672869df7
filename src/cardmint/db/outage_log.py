"""One line, not a traceback, for an expected outage.

When the database is out of reach (a failover, a restart), asyncpg's errors reach the
logs of uvicorn, asyncio and our own loops with 25-line tracebacks that hide the one
line that matters. `OutageFilter` turns a record whose exception is a lost or refused
connection into that line: the message, the error's class and its (redacted) text.
Any other exception keeps its traceback: that one is a bug worth reading."""

from __future__ import annotations

import logging
from typing import Any

from cardmint.db.errors import is_connection_error
from cardmint.dsn import redact
from cardmint.errors import DatabaseUnavailable


class OutageFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (is_connection_error(exc) or isinstance(exc, DatabaseUnavailable)):
            cause = redact(str(exc)) or "no detail"
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {cause})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def serve_log_config(base: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging config (`base`, its LOGGING_CONFIG) with the outage filter on
    every handler, an access log, and CardMint's, asyncio's and asyncpg's records printed
    through the same handler (they had none: Python's last resort printed them raw)."""
    import copy

    config = copy.deepcopy(base)
    config.setdefault("filters", {})["outage"] = {"()": f"{__name__}.OutageFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("outage")
    # asyncpg and asyncio log a lost server with a traceback (asyncpg's pool, replaced in
    # issue 19, logged four "Failed to restore the pool connection floor" after failovers)
    for name in ("cardmint", "asyncio", "asyncpg"):
        config["loggers"][name] = {"handlers": ["default"], "level": "INFO",
                                   "propagate": False}
    return config
