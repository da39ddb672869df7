"""A small connection pool: asyncpg connections lent one query (or one transaction) at a time.

asyncpg's own pool spent about 30 µs of client CPU on every acquire and release (a task
per release under `asyncio.shield`, an inactivity timer re-armed each time, a proxy object
per loan): more than the rest of a point read together (bench/README.md, issue 19). Here
a loan from the idle stack and its return are plain list operations; only what needs the
server awaits it (a new connection, the rollback of a transaction left open, a reset).

What it keeps of asyncpg's pool: at most `max_size` connections, `min_size` opened
up front, waiters served first come first served, `expire_connections()` (each
connection is replaced when next lent or returned), new connect arguments for new
connections (a rotated password), `close()` that lets lent connections finish and
`terminate()` that does not. Idle connections are not closed after a while: the pools are
small, and an idle connection costs the server little.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

Connect = Callable[..., Awaitable[asyncpg.Connection]]
Hook = Callable[[asyncpg.Connection], Awaitable[None]]
CLOSE_TIMEOUT_S = 2.0  # a graceful close of a dropped connection; then it is cut


class ConnectionPool:
    """Connections to one DSN. Open it with `open()`; lend with `acquire()`/`release()`."""

    def __init__(self, dsn: str, *, min_size: int, max_size: int,
                 connect: Connect | None = None, init: Hook | None = None,
                 reset: Hook | None = None, **connect_args: Any) -> None:
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError("pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1")
        self._dsn = dsn
        self._args = connect_args
        self._connect = connect or asyncpg.connect
        self._init = init
        self._reset = reset
        self._min = min_size
        self._max = max_size
        self._idle: list[asyncpg.Connection] = []  # a stack: the warmest connection first
        self._lent: set[asyncpg.Connection] = set()
        self._born: dict[asyncpg.Connection, int] = {}  # connection -> its generation
        self._size = 0  # open, lent or being opened
        self._generation = 0
        # Each waiter gets a connection, or None: "a slot is free, open one".
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._closing = False
        self._all_back = asyncio.Event()
        self._closers: set[asyncio.Task[None]] = set()

    async def open(self) -> ConnectionPool:
        """Open `min_size` connections; the first failure is raised (nothing left open)."""
        opened = await asyncio.gather(*(self.acquire() for _ in range(self._min)),
                                      return_exceptions=True)
        failed = [x for x in opened if isinstance(x, BaseException)]
        if failed:
            self.terminate()
            raise failed[0]
        for conn in opened:
            assert isinstance(conn, asyncpg.Connection)
            await self.release(conn)
        return self

    # -- lending -------------------------------------------------------------------

    def acquire_nowait(self) -> asyncpg.Connection | None:
        """An idle connection at once, or None (then `acquire()` opens one or waits)."""
        while self._idle and not self._closing:
            conn = self._idle.pop()
            if self._usable(conn):
                self._lent.add(conn)
                return conn
            self._drop(conn)
        return None

    async def acquire(self) -> asyncpg.Connection:
        if self._closing:
            raise asyncpg.InterfaceError("the connection pool is closed")
        conn = self.acquire_nowait()
        if conn is not None:
            return conn
        if self._size < self._max:
            self._size += 1
            return await self._open_one()
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            got = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_on(waiter.result())  # handed over as we were cancelled
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise
        if got is None:  # a slot, not a connection
            return await self._open_one()
        self._lent.add(got)
        return got

    async def release(self, conn: asyncpg.Connection) -> None:
        """Take a lent connection back: rolled back if a transaction was left open, reset
        by the pool's hook, then lent to the next waiter or kept idle. A closed, expired
        or failing one is dropped and its slot freed. A statement cancelled on the client
        may still be running: the borrower terminates such a connection before returning
        it (asyncpg's pool waited for the cancellation; it has no public way to tell)."""
        if conn not in self._lent:
            return  # not ours, or already returned
        self._lent.discard(conn)
        if self._closing or not self._usable(conn):
            self._drop(conn)
            return
        try:
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            if self._reset is not None:
                await self._reset(conn)
        except BaseException:
            conn.terminate()
            self._drop(conn)
            raise
        self._hand_on(conn)

    def _usable(self, conn: asyncpg.Connection) -> bool:
        return not conn.is_closed() and self._born.get(conn) == self._generation

    async def _open_one(self) -> asyncpg.Connection:
        """Open a connection in a slot already counted in `_size`."""
        try:
            conn = await self._connect(self._dsn, **self._args)
        except BaseException:
            self._hand_on(None)
            raise
        try:
            if self._init is not None:
                await self._init(conn)
        except BaseException:
            conn.terminate()
            self._hand_on(None)
            raise
        if self._closing:
            conn.terminate()
            self._hand_on(None)
            raise asyncpg.InterfaceError("the connection pool is closed")
        self._born[conn] = self._generation
        self._lent.add(conn)
        return conn

    def _hand_on(self, conn: asyncpg.Connection | None) -> None:
        """Give a connection (or a free slot: None) to the first waiter still waiting;
        with none, keep the connection idle or give the slot up."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)
            return
        self._size -= 1
        if self._closing and not self._lent:
            self._all_back.set()

    def _drop(self, conn: asyncpg.Connection) -> None:
        """Forget a connection, close it in the background, and free its slot."""
        self._born.pop(conn, None)
        if not conn.is_closed():
            task = asyncio.get_running_loop().create_task(self._close(conn))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)
        self._hand_on(None)

    @staticmethod
    async def _close(conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=CLOSE_TIMEOUT_S)
        except Exception:  # unreachable or already gone: cut it
            conn.terminate()

    # -- the pool as a whole ---------------------------------------------------------

    async def expire_connections(self) -> None:
        """Replace every connection: idle ones now, lent ones when they come back."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)

    def set_connect_args(self, dsn: str, **connect_args: Any) -> None:
        """What new connections are opened with from now on (open ones are kept)."""
        self._dsn, self._args = dsn, connect_args

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        conn = await self.acquire()
        try:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row
        except asyncio.CancelledError:  # mid-statement (a timeout): never lend it busy
            conn.terminate()
            raise
        finally:
            await self.release(conn)

    def get_size(self) -> int:
        return self._size

    def get_idle_size(self) -> int:
        return len(self._idle)

    def get_max_size(self) -> int:
        return self._max

    async def close(self) -> None:
        """Close idle connections now and lent ones as they come back; returns when all
        are closed."""
        self._shut()
        if self._lent:
            await self._all_back.wait()
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    def terminate(self) -> None:
        """Cut every connection, lent or not, at once."""
        self._shut()
        for conn in [*self._lent, *self._born]:
            conn.terminate()
        self._lent.clear()
        self._born.clear()
        self._size = 0

    def _shut(self) -> None:
        self._closing = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the connection pool is closed"))
        if not self._lent:
            self._all_back.set()
