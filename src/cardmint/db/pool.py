"""The primary pool, the replica pools and the rule that picks one for each query.

- Writes and transactions go to the primary.
- A read marked `stale_ok=True` goes to a healthy replica whose lag is within the
  threshold, else to the primary; but never right after this context wrote
  (read-your-writes for `read_after_write_s`), and never inside a transaction.
- A read that loses its connection is retried once (on the primary); a write is not.
- Every query's latency (pool wait included) goes into a histogram per target.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import asyncpg

from cardmint import secretfile
from cardmint.config import Settings, secret
from cardmint.db import errors
from cardmint.db.connpool import ConnectionPool
from cardmint.db.hosts import HostOrder
from cardmint.db.latency import LatencyHistogram
from cardmint.db.pooled import behind_pooler
from cardmint.dsn import password_of, redact, username, with_password
from cardmint.errors import CardmintError, DatabaseUnavailable, PermissionDenied

Record = asyncpg.Record
# A connection lent by a pool (what transaction() holds and connection() yields).
PooledConnection = asyncpg.Connection


class Row(Protocol):
    """A row read by column name: an asyncpg Record (not a Mapping: it iterates its
    values) or a dict made of one."""

    def __getitem__(self, key: str, /) -> Any: ...


Isolation = Literal["read_committed", "read_uncommitted", "repeatable_read", "serializable"]

# Pools name their connections "cardmint/<pid>" so a server-side view can tell each
# application process's pool apart (health's pool_utilization, the security audit).
APPLICATION = "cardmint"

# What the client waits beyond the server's own bounds before it gives a statement up.
CLIENT_MARGIN_S = 1.0

LAG_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS lag_s
"""


@dataclass
class Replica:
    """One replica's pool and what the last check found."""

    name: str  # host:port, never the DSN
    dsn: str
    pool: ConnectionPool | None = None
    healthy: bool = False
    lag_s: float | None = None
    error: str | None = None
    checked_at: float | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "healthy": self.healthy, "lag_s": self.lag_s,
                "error": self.error, **pool_figures(self.pool)}


class Database:
    """What the rest of CardMint queries through. Open it once per process."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                 primary_dsn: str | None = None,
                 replica_dsns: Sequence[str] | None = None) -> None:
        self.settings = settings
        self._clock = clock
        dsn = primary_dsn or secret(settings.database_url)
        if not dsn:
            raise settings.no_cluster()
        self._primary_dsn = dsn
        follow = replica_dsns is None
        if replica_dsns is None:
            replica_dsns = [s.get_secret_value() for s in settings.replica_urls]
        self.replicas = [Replica(name=_hosts(d), dsn=d) for d in replica_dsns]
        # Replicas that came from the settings' topology (the cluster's state) follow it: a
        # failover or rejoin changes it and the next replica check sees that.
        self._follow = follow and _source_replicas(settings) == list(replica_dsns)
        self._primary: ConnectionPool | None = None
        self._rotation = itertools.count()
        self._monitor: asyncio.Task[None] | None = None
        self._waiting = 0
        self._tx: ContextVar[Transaction | None] = ContextVar(f"cardmint_tx_{id(self)}",
                                                             default=None)
        self._last_write: ContextVar[float | None] = ContextVar(f"cardmint_w_{id(self)}",
                                                                default=None)
        self.latency = {"primary": LatencyHistogram(), "replica": LatencyHistogram()}
        self._raw: set[int] = set()  # server PIDs of primary connections lent by connection()
        self._hosts = HostOrder()

    # -- life cycle ----------------------------------------------------------------

    async def open(self, *, monitor: bool = True) -> Database:
        """Connect the primary pool (raising DatabaseUnavailable if it cannot), prepare the
        replica pools, check the replicas once and, with `monitor`, keep checking them."""
        s = self.settings
        try:
            self._primary = await ConnectionPool(
                self._primary_dsn, min_size=s.pool_min, max_size=s.pool_max,
                init=init_connection, reset=self._reset_primary, connect=self._hosts.connect,
                **self.connect_args(self._dsn_of(None)),
            ).open()
        except Exception as exc:
            raise errors.translate(exc, "the primary") from exc
        for replica in self.replicas:
            # min_size=0: no connection yet, so a replica that is down cannot stop start-up.
            replica.pool = await ConnectionPool(
                replica.dsn, min_size=0, max_size=s.replica_pool_max,
                init=init_connection, **self.connect_args(replica.dsn),
            ).open()
        await self.check_replicas()
        if monitor and (self.replicas or self._follow):
            self._monitor = asyncio.create_task(self._watch_replicas())
        return self

    def connect_args(self, dsn: str) -> dict[str, Any]:
        """What every new connection of a pool gets besides its DSN."""
        s = self.settings
        replica = dsn != self._primary_dsn
        name = f"{APPLICATION}{'-replica' if replica else ''}/{os.getpid()}"
        args: dict[str, Any] = {
            "timeout": s.connect_timeout_s,
            "server_settings": {"application_name": name,
                                "statement_timeout": str(s.statement_timeout_ms)},
            "command_timeout": command_timeout(s),
        }
        if behind_pooler(dsn, s):  # PgBouncer < 1.21 keeps no prepared statements
            args["statement_cache_size"] = 0
        return args

    def _dsn_of(self, pool: ConnectionPool | None) -> str:
        for replica in self.replicas:
            if pool is not None and replica.pool is pool:
                return replica.dsn
        return self._primary_dsn

    def _reload_password(self, pool: ConnectionPool) -> bool:
        """After `security rotate`, new connections need the password the secrets file now
        holds; connections already open keep working. True if the pool got a new one."""
        dsn = self._dsn_of(pool)
        user = username(dsn)
        fresh = secretfile.read(self.settings.secrets_path).get(secretfile.role_key(user or ""))
        if not fresh or fresh == password_of(dsn):
            return False
        new_dsn = with_password(dsn, fresh)
        for replica in self.replicas:
            if replica.pool is pool:
                replica.dsn = new_dsn
        if pool is self._primary:
            self._primary_dsn = new_dsn
        pool.set_connect_args(new_dsn, **self.connect_args(new_dsn))
        return True

    async def _acquire_after_rotation(self, pool: ConnectionPool,
                                      timeout: float) -> PooledConnection:
        """The password was refused: a rotation is under way or done. Its new password
        reaches the secrets file a moment after the server has it (once verified), so
        look for it until the connect timeout, then give up."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while True:
            if self._reload_password(pool):
                try:
                    async with asyncio.timeout(timeout):
                        return await pool.acquire()
                except asyncpg.InvalidPasswordError:
                    pass
            if time.monotonic() > deadline:
                raise DatabaseUnavailable("the database refused the password, and no new "
                                          "one arrived in the secrets file")
            await asyncio.sleep(0.02)

    async def recycle(self) -> None:
        """Replace every pooled connection as it is next released (after a rotation or a
        failover); connections in use finish what they do first."""
        for pool in (self._primary, *(r.pool for r in self.replicas)):
            if pool is not None:
                await pool.expire_connections()

    async def _reset_primary(self, conn: asyncpg.Connection) -> None:
        """On release (after the pool has rolled back any open transaction). The query
        methods leave no session state behind, so asyncpg's full reset (listeners, advisory
        unlock, CLOSE ALL, UNLISTEN *, RESET ALL: one more round trip per query, measured at
        35-40 % of a point read's throughput) runs only for connections lent raw by
        connection(). A session-level SET belongs in a transaction as SET LOCAL, or in
        connection()."""
        pid = conn.get_server_pid()
        if pid in self._raw:
            self._raw.discard(pid)
            await conn.reset()

    @property
    def is_open(self) -> bool:
        return self._primary is not None

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            try:
                await self._monitor
            except asyncio.CancelledError:
                pass
            self._monitor = None
        pools = [p for p in (self._primary, *(r.pool for r in self.replicas)) if p is not None]
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
        self._primary = None
        for replica in self.replicas:
            replica.pool = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- queries -------------------------------------------------------------------

    async def fetch(self, sql: str, *args: Any, stale_ok: bool = False) -> list[Record]:
        rows: list[Record] = await self._read("fetch", sql, args, stale_ok)
        return rows

    async def fetchrow(self, sql: str, *args: Any, stale_ok: bool = False) -> Record | None:
        row: Record | None = await self._read("fetchrow", sql, args, stale_ok)
        return row

    async def fetchval(self, sql: str, *args: Any, stale_ok: bool = False) -> Any:
        return await self._read("fetchval", sql, args, stale_ok)

    async def execute(self, sql: str, *args: Any) -> str:
        """A write on the primary, in its own transaction. Never retried."""
        tx = self._open_tx()
        if tx is not None:
            return await tx.execute(sql, *args)
        try:
            status: str = await self._run(self._primary_pool(), "primary", "execute", sql, args)
            return status
        finally:
            self._last_write.set(self._clock())

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        tx = self._open_tx()
        if tx is not None:
            return await tx.executemany(sql, args)
        try:
            await self._run(self._primary_pool(), "primary", "executemany", sql, (args,))
        finally:
            self._last_write.set(self._clock())

    @asynccontextmanager
    async def transaction(self, *, isolation: Isolation = "read_committed",
                          readonly: bool = False) -> AsyncIterator[Transaction]:
        """A transaction on the primary. Queries through the database object inside the
        block (in this task) join it."""
        if self._open_tx() is not None:
            raise RuntimeError("transactions do not nest; use the open one")
        pool = self._primary_pool()
        conn = await self._acquire(pool, "primary")
        tx = Transaction(self, conn)
        token = self._tx.set(tx)
        try:
            try:
                async with conn.transaction(isolation=isolation, readonly=readonly):
                    yield tx
            except PermissionDenied as exc:  # rolled back now: the connection can be asked
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                raise await errors.diagnose(conn, cause, "the primary") from exc
            except asyncpg.PostgresError as exc:
                raise await errors.diagnose(conn, exc, "the primary") from exc
            except errors.CONNECTION_ERRORS as exc:  # COMMIT or BEGIN timed out or was lost
                if isinstance(exc, TimeoutError):
                    discard(conn)
                await _expire_if_lost(pool, exc)
                raise errors.translate(exc, "the primary") from exc
            except asyncpg.InterfaceError as exc:
                # a statement in the block timed out and its connection was discarded:
                # asyncpg cannot roll back on it (the server does, as the socket closed)
                if tx.lost is None:
                    raise
                await pool.expire_connections()  # its siblings are as stale
                raise tx.lost from exc
        finally:
            self._tx.reset(token)
            if not readonly:
                self._last_write.set(self._clock())
            await pool.release(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PooledConnection]:
        """A raw primary connection for what the methods above cannot do (COPY, LISTEN).
        Its queries are not timed; errors are translated."""
        pool = self._primary_pool()
        conn = await self._acquire(pool, "primary")
        self._raw.add(conn.get_server_pid())
        try:
            yield conn
        except asyncpg.PostgresError as exc:
            raise await errors.diagnose(conn, exc, "the primary") from exc
        except errors.CONNECTION_ERRORS as exc:  # lost mid-way: a 503, never a 500
            if isinstance(exc, TimeoutError):
                discard(conn)
            await _expire_if_lost(pool, exc)
            raise errors.translate(exc, "the primary") from exc
        except asyncio.CancelledError:  # perhaps mid-statement: not to be lent again
            discard(conn)
            raise
        finally:
            await pool.release(conn)

    # -- routing -------------------------------------------------------------------

    def route(self, stale_ok: bool) -> Replica | None:
        """The replica a read should use, or None for the primary."""
        if not stale_ok or self._open_tx() is not None or self.wrote_recently():
            return None
        limit = self.settings.replica_lag_warn_s
        usable = [r for r in self.replicas
                  if r.healthy and r.pool is not None and (r.lag_s or 0.0) <= limit]
        if not usable:
            return None
        return usable[next(self._rotation) % len(usable)]

    def _open_tx(self) -> Transaction | None:
        """The transaction this task opened. Tasks started inside the block inherit the
        context variable but must not share the connection, so the owner is checked."""
        tx = self._tx.get()
        if tx is not None and tx.task is asyncio.current_task():
            return tx
        return None

    def wrote_recently(self) -> bool:
        last = self._last_write.get()
        return last is not None and self._clock() - last < self.settings.read_after_write_s

    async def _read(self, method: str, sql: str, args: tuple[Any, ...], stale_ok: bool) -> Any:
        tx = self._open_tx()
        if tx is not None:
            return await getattr(tx, method)(sql, *args)
        replica = self.route(stale_ok)
        # route() picks only replicas with a pool; hold it, as a topology refresh during
        # the query may take it from the replica
        replica_pool = replica.pool if replica is not None else None
        if replica is not None and replica_pool is not None:
            try:
                return await self._run(replica_pool, "replica", method, sql, args,
                                       translate=False)
            except Exception as exc:
                if not errors.retryable(exc):
                    raise errors.translate(exc, replica.name) from exc
                replica.healthy, replica.error = False, redact(str(exc)) or type(exc).__name__
                # one lost connection means its siblings are likely gone too
                await replica_pool.expire_connections()
            # the one retry: the primary has everything the replica had
            return await self._run(self._primary_pool(), "primary", method, sql, args)
        pool = self._primary_pool()
        try:
            return await self._run(pool, "primary", method, sql, args, translate=False)
        except Exception as exc:
            if not errors.retryable(exc):
                raise errors.translate(exc, "the primary") from exc
            await pool.expire_connections()
        return await self._run(pool, "primary", method, sql, args)

    async def _run(self, pool: ConnectionPool, target: str, method: str, sql: str,
                   args: tuple[Any, ...], *, translate: bool = True) -> Any:
        began = time.perf_counter()
        try:
            conn = await self._acquire(pool, target)
            try:
                return await getattr(conn, method)(sql, *args)
            except asyncpg.InsufficientPrivilegeError as exc:  # a freeze, or a missing grant
                raise await errors.diagnose(conn, exc, target) from exc
            except (TimeoutError, asyncio.CancelledError):
                # cancelled mid-statement, asyncpg is still cancelling it on the server:
                # returned as it is, the connection would be lent busy
                discard(conn)
                raise
            finally:
                await pool.release(conn)
        except Exception as exc:
            await _expire_if_lost(pool, exc)
            if not translate:
                raise
            raise errors.translate(exc, target) from exc
        finally:
            self.latency[target].record(time.perf_counter() - began)

    async def _acquire(self, pool: ConnectionPool, target: str) -> PooledConnection:
        conn = pool.acquire_nowait()  # the usual case: no timer, no wait
        if conn is not None:
            return conn
        timeout = self.settings.pool_acquire_timeout_s
        self._waiting += 1
        try:
            try:
                async with asyncio.timeout(timeout):
                    return await pool.acquire()
            except asyncpg.InvalidPasswordError:
                return await self._acquire_after_rotation(pool, timeout)
        except TimeoutError:
            raise errors.pool_timeout(target, timeout) from None
        except Exception as exc:
            raise errors.translate(exc, target) from exc
        finally:
            self._waiting -= 1

    def _primary_pool(self) -> ConnectionPool:
        if self._primary is None:
            raise DatabaseUnavailable("the database is not open")
        return self._primary

    # -- replicas ------------------------------------------------------------------

    async def check_replicas(self) -> list[dict[str, Any]]:
        """Ask every replica whether it is in recovery and how far behind it is (after
        taking up a changed replica list, when this database follows the cluster state)."""
        if self._follow:
            dsns = _source_replicas(self.settings)
            if dsns is not None:
                await self.refresh_topology(dsns)
        await asyncio.gather(*(self._check(r) for r in self.replicas))
        return [r.describe() for r in self.replicas]

    async def refresh_topology(self, replica_dsns: Sequence[str] | None = None) -> bool:
        """Use `replica_dsns` (default: what the settings' sources say now) as the replicas
        from now on: those still listed keep their pool, new ones get one, the others'
        pools close. True if the list changed."""
        if replica_dsns is None:
            replica_dsns = _source_replicas(self.settings)
            if replica_dsns is None:
                return False
        if [r.dsn for r in self.replicas] == list(replica_dsns):
            return False
        known = {r.dsn: r for r in self.replicas}
        kept = [known.get(d) or Replica(name=_hosts(d), dsn=d) for d in replica_dsns]
        gone = [r for r in self.replicas if r not in kept]
        for replica in kept:
            if replica.pool is None and self._primary is not None:
                replica.pool = await ConnectionPool(
                    replica.dsn, min_size=0, max_size=self.settings.replica_pool_max,
                    init=init_connection, **self.connect_args(replica.dsn)).open()
        self.replicas = kept
        for replica in gone:
            if replica.pool is not None:
                try:  # reads running on it finish (a promoted node is a good node)
                    await asyncio.wait_for(replica.pool.close(), 2.0)
                except Exception:  # slow or failing: drop it, the monitor must go on
                    replica.pool.terminate()
                replica.pool = None
        return True

    async def _check(self, replica: Replica) -> None:
        replica.checked_at = self._clock()
        if replica.pool is None:
            replica.healthy, replica.error = False, "not open"
            return
        try:
            row = one(await asyncio.wait_for(replica.pool.fetchrow(LAG_SQL),
                                             self.settings.connect_timeout_s))
        except Exception as exc:
            replica.healthy, replica.lag_s = False, None
            replica.error = redact(str(exc)) or type(exc).__name__
            return
        if not row["in_recovery"]:
            # promoted, or a primary listed as a replica: its data may have diverged
            replica.healthy, replica.lag_s = False, None
            replica.error = "not in recovery (not a replica)"
            return
        replica.healthy, replica.lag_s, replica.error = True, row["lag_s"], None

    async def _watch_replicas(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_check_interval_s)
            await self.check_replicas()

    # -- figures -------------------------------------------------------------------

    def pool_stats(self) -> dict[str, Any]:
        """Pool figures: `utilization_pct` is connections in use over the pool's maximum."""
        return {**pool_figures(self._primary), "waiting": self._waiting,
                "replicas": [r.describe() for r in self.replicas]}

    def latency_stats(self) -> dict[str, Any]:
        return {target: h.snapshot() for target, h in self.latency.items()}

    def reset_latency(self) -> None:
        for histogram in self.latency.values():
            histogram.reset()


class Transaction:
    """The queries of one open transaction; latency is recorded as for the pool."""

    def __init__(self, db: Database, conn: PooledConnection) -> None:
        self._db = db
        self.connection = conn
        self.task = asyncio.current_task()
        self.timeout: float | None = None  # per statement; None: the pool's command_timeout
        self.lost: CardmintError | None = None  # set when a statement timed out

    def allow(self, statement_timeout_ms: int) -> None:
        """This transaction's statements may run for `statement_timeout_ms` (the caller
        also raises the server's statement_timeout, SET LOCAL): the client waits that long
        and a little more instead of the pool's bound."""
        self.timeout = statement_timeout_ms / 1000 + CLIENT_MARGIN_S

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return await getattr(self.connection, method)(sql, *args, timeout=self.timeout)
        except TimeoutError as exc:
            discard(self.connection)
            self.lost = errors.translate(exc, "the primary")
            raise self.lost from exc
        except Exception as exc:
            raise errors.translate(exc, "the primary") from exc
        finally:
            self._db.latency["primary"].record(time.perf_counter() - began)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        rows: list[Record] = await self._call("fetch", sql, *args)
        return rows

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A transaction nested in this one: a failure in the block undoes the block only
        (and is raised); the outer transaction goes on."""
        try:
            async with self.connection.transaction():
                yield
        except asyncpg.PostgresError as exc:
            raise errors.translate(exc, "the primary") from exc

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        row: Record | None = await self._call("fetchrow", sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call("fetchval", sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self._call("execute", sql, *args)
        return status

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await self._call("executemany", sql, args)


def one(row: Record | None) -> Record:
    """The row of a query that always returns one (an aggregate, INSERT ... RETURNING, a
    row the transaction holds locked): None there is a bug in the query, not a state."""
    if row is None:
        raise RuntimeError("a query that always returns a row returned none")
    return row


async def init_connection(conn: asyncpg.Connection) -> None:
    """json and jsonb arrive as Python values, not strings."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=json.dumps,
                                  decoder=json.loads)


def pool_figures(pool: ConnectionPool | None) -> dict[str, Any]:
    if pool is None:
        return {"size": 0, "idle": 0, "in_use": 0, "max": 0, "utilization_pct": 0.0}
    size, idle, most = pool.get_size(), pool.get_idle_size(), pool.get_max_size()
    in_use = size - idle
    return {"size": size, "idle": idle, "in_use": in_use, "max": most,
            "utilization_pct": round(100.0 * in_use / most, 1) if most else 0.0}


def command_timeout(settings: Settings) -> float | None:
    """The client-side bound on one statement of the application's pools (asyncpg's
    command_timeout), so that a server that stops answering (its host cut off: TCP would
    retransmit for ~15 min) costs a 503, not a hang. A little above the server's
    statement_timeout, so a slow statement is still cancelled by the server first; and
    never below the sync guard's bound (a COMMIT waiting for a lost synchronous standby
    returns once the guard degrades). With `sync_strict` the guard never degrades: past
    this bound the client gives up with a 503 while the COMMIT, already durable on the
    primary, stays invisible until a standby confirms it (the outcome is unknown to the
    client, as with any lost answer). None when statement_timeout is off (0)."""
    if settings.statement_timeout_ms <= 0:
        return None
    sync_bound = settings.sync_degrade_after_s + settings.sync_guard_interval_s
    return max(settings.statement_timeout_ms / 1000, sync_bound) + CLIENT_MARGIN_S


def discard(conn: PooledConnection) -> None:
    """Close a connection whose statement timed out on the client. Released as it is,
    the pool would wait for asyncpg's cancel request (which a cut-off host never
    answers) and then for a reset; closed, its slot reconnects on next use."""
    conn.terminate()


async def _expire_if_lost(pool: ConnectionPool, exc: BaseException) -> None:
    """After a lost connection (a killed primary) or a write refused as read-only (a
    demoted one), the pool's other connections are as stale: replace them all."""
    lost = errors.is_connection_error(exc) and not isinstance(
        exc, asyncpg.TooManyConnectionsError)
    if lost or isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        await pool.expire_connections()


def _source_replicas(settings: Settings) -> list[str] | None:
    """The replica DSNs the settings' topology gives now; None without one (or when it
    cannot be read)."""
    return settings.topology.replica_dsns() if settings.topology is not None else None


def _hosts(dsn: str) -> str:
    try:
        return urlsplit(dsn).netloc.rsplit("@", 1)[-1] or "replica"
    except ValueError:
        return "replica"
