"""LISTEN on a channel from a pooled connection until told to stop, re-made whenever the
connection is lost (a failover, a restart): what the intake worker and the catalog cache
each did with their own loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from cardmint.db.pool import Database
from cardmint.errors import CardmintError

log = logging.getLogger("cardmint.db.listen")

# What a lost or unreachable primary raises on the listening connection.
LOST = (CardmintError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

Listener = Callable[[Any, int, str, object], None]  # asyncpg's (connection, pid, channel, payload)


async def wait(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` seconds have passed, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


async def listen(db: Database, channel: str, on_notify: Listener, stop: asyncio.Event, *,
                 retry_s: float, on_listening: Callable[[], None] | None = None) -> None:
    """Call `on_notify` for each notification on `channel` until `stop`. While the
    connection cannot be had, try again every `retry_s`; `on_listening` runs each time
    listening (re)starts, for what was missed meanwhile."""
    while not stop.is_set():
        try:
            async with db.connection() as conn:
                await conn.add_listener(channel, on_notify)
                if on_listening is not None:
                    on_listening()
                try:
                    while not stop.is_set() and not conn.is_closed():
                        await wait(stop, retry_s)
                finally:
                    # a lost primary may have taken the connection back already
                    with contextlib.suppress(*LOST):
                        if not conn.is_closed():
                            await conn.remove_listener(channel, on_notify)
        except LOST as exc:
            log.debug("not listening on %s: %s", channel, exc)
            await wait(stop, retry_s)
