"""Catalog answers cached in the server process, never older than the last completed load.

The catalog changes only on a load, and every load that changes it bumps the one row of
`catalog_version` in its own transaction (catalog/load.py). Each cached answer carries the
version its rows were read at (the same statement reads the row). An answer is served
from the cache only if its version is the one a version read *started after the request
arrived* returns, so a load that committed before the request began is always seen, in
this process and in every other. Those version reads are one trivial query on the
primary, shared by all requests that arrive while one is in flight (single flight), so a
burst of N cached answers costs one round trip, not N.

Beside that, a LISTEN on `catalog_version` drops every entry at once when a load commits,
so memory does not hold answers that can no longer be served. Any error of the version
read (e.g. the table not migrated yet) bypasses the cache: the answer is read as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

import asyncpg

from cardmint.db import Database
from cardmint.db.listen import listen
from cardmint.errors import CardmintError

log = logging.getLogger("cardmint.catalog.cache")

CHANNEL = "catalog_version"
VERSION_SQL = "SELECT version FROM catalog_version"
# For a statement that reads catalog rows: the version they are at, in the same snapshot.
VERSION_COLUMN = "(SELECT version FROM catalog_version) AS catalog_version"
MAX_BYTES = 64 * 1024 * 1024  # per process; a full catalog of card answers is ~45 MB
RELISTEN_S = 2.0
# What ends a LISTEN connection: it is made again after RELISTEN_S.

# What a loader returns: the answer's bytes and the version its rows were read at (None:
# not cacheable, e.g. nothing found), or None when there is nothing to answer (a 404).
Loaded = tuple[bytes, int | None] | None


class VersionGate:
    """The catalog's version, as read by a query that began after the caller asked."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._next: asyncio.Future[int] | None = None  # the read not yet sent
        self._running = False

    async def current(self) -> int:
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            if not self._running:
                self._running = True
                asyncio.get_running_loop().create_task(self._reads())
        return await asyncio.shield(self._next)

    async def _reads(self) -> None:
        """Send reads back to back while callers wait for one that began after them."""
        try:
            while self._next is not None:
                waiting, self._next = self._next, None
                try:
                    version = await self._db.fetchval(VERSION_SQL)
                except asyncio.CancelledError:
                    waiting.cancel()
                    raise
                except Exception as exc:  # handed to every waiter, who bypasses the cache
                    waiting.set_exception(exc)
                    waiting.exception()  # retrieved: no "never retrieved" warning
                    continue
                waiting.set_result(int(version))
        finally:
            self._running = False


class CatalogCache:
    """Answers (bytes) by key, each with the catalog version it was read at; LRU by bytes."""

    def __init__(self, db: Database, *, max_bytes: int = MAX_BYTES) -> None:
        self._db = db
        self._gate = VersionGate(db)
        self._entries: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.hits = self.misses = self.bypassed = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: Hashable,
                  load: Callable[[bool], Awaitable[Loaded]]) -> bytes | None:
        """The answer for `key`: cached if read at the current version, else loaded
        (`load(stale_ok)`) and kept when its rows are at the current version. None:
        nothing to answer."""
        if self.max_bytes == 0:  # turned off (CARDMINT_CATALOG_CACHE_MB=0)
            loaded = await load(True)
            return loaded[0] if loaded is not None else None
        try:
            version = await self._gate.current()
        except (CardmintError, asyncpg.PostgresError, OSError) as exc:
            self.bypassed += 1
            log.debug("catalog cache bypassed: %s", exc)
            loaded = await load(True)
            return loaded[0] if loaded is not None else None
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        loaded = await load(True)
        if loaded is not None and loaded[1] is not None and loaded[1] < version:
            # a replica that has not replayed the last load yet: read the primary instead,
            # so no answer (cached or not) is older than the last completed load
            loaded = await load(False)
        if loaded is None:
            return None
        body, read_at = loaded
        if read_at is not None and read_at >= version:
            self._put(key, read_at, body)
        return body

    def _put(self, key: Hashable, version: int, body: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._entries[key] = (version, body)
        self._bytes += len(body)
        while self._bytes > self.max_bytes and self._entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)

    def drop_older_than(self, version: int) -> None:
        """Forget every answer read before `version` (a load committed)."""
        for key in [k for k, (v, _) in self._entries.items() if v < version]:
            self._bytes -= len(self._entries.pop(key)[1])

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            self.drop_older_than(int(str(payload)))
        except ValueError:
            self.clear()

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def listen(self, stop: asyncio.Event) -> None:
        """LISTEN for loads until `stop`: drop what they made stale at once. Correctness
        does not rest on it (every hit checks the version); memory does."""
        await listen(self._db, CHANNEL, self._notified, stop, retry_s=RELISTEN_S)


