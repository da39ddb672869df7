"""Observers of a lab under test: a writer that records every acknowledged write, and a
checker that fails on any moment with two writable primaries.

Both reach each member through its unix socket, as a program on that host would, so a
partitioned member is still asked (and may still acknowledge writes: that is what an
asynchronous cluster can lose). The writer asks for a read-write session among all
members (`target_session_attrs=read-write`, like the application's multi-host DSN).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from cardmint.cluster.state import SUPERUSER
from cardmint.ops.lab.state import PG_PORT, Lab, LabHost

PROBE_DDL = "CREATE TABLE IF NOT EXISTS cmlab_probe (id bigint PRIMARY KEY, " \
            "member text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
WRITE_TIMEOUT_S = 1.0
CHECK_EVERY_S = 0.05
ASK_TIMEOUT_S = 0.5


@dataclass
class Ack:
    id: int
    member: str
    at: float  # monotonic


@dataclass
class Writer:
    """Sequential inserts; `acks` holds the acknowledged ones."""

    lab: Lab
    acks: list[Ack] = field(default_factory=list)
    failures: int = 0
    attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        conn: asyncpg.Connection | None = None
        member = ""
        try:
            while not self._stop.is_set():
                if conn is None:
                    conn, member = await _writable(self.lab)
                    if conn is None:
                        await asyncio.sleep(CHECK_EVERY_S)
                        continue
                self.attempts += 1
                ident = self.attempts
                try:
                    await conn.execute("INSERT INTO cmlab_probe (id, member) VALUES ($1, $2)",
                                       ident, member, timeout=WRITE_TIMEOUT_S)
                    self.acks.append(Ack(ident, member, time.monotonic()))
                except Exception as exc:  # an observer must outlive anything
                    self.errors[type(exc).__name__] += 1
                    self.failures += 1
                    conn.terminate()
                    conn = None
                await asyncio.sleep(0.005)
        finally:
            if conn is not None:
                conn.terminate()

    def stop(self) -> None:
        self._stop.set()

    async def more(self, count: int, timeout: float = 60.0) -> None:
        target = len(self.acks) + count
        deadline = time.monotonic() + timeout
        while len(self.acks) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the lab writer made no progress in {timeout:.0f} s")
            await asyncio.sleep(0.01)

    def after(self, moment: float) -> list[Ack]:
        return [a for a in self.acks if a.at > moment]

    def outage(self, since: float) -> float:
        """The longest gap between acknowledgements after `since` (the cut)."""
        times = [since] + [a.at for a in self.acks if a.at > since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


async def _writable(lab: Lab) -> tuple[asyncpg.Connection | None, str]:
    for host in lab.hosts:
        try:
            conn = await asyncpg.connect(
                host=host.socket_dir, port=PG_PORT, user=SUPERUSER,
                password=lab.passwords()[SUPERUSER], database="postgres",
                timeout=ASK_TIMEOUT_S, command_timeout=WRITE_TIMEOUT_S)
        except Exception:  # not reachable now: the next one
            continue
        try:
            if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                return conn, host.name
        except Exception:  # not writable now
            pass
        conn.terminate()
    return None, ""


async def prepare(lab: Lab) -> None:
    leader = await _writable(lab)
    conn = leader[0]
    if conn is None:
        raise AssertionError("no writable member to create the probe table on")
    try:
        await conn.execute(PROBE_DDL)
    finally:
        await conn.close()


async def present(lab: Lab, host: LabHost) -> set[int]:
    conn = await lab.connect(host)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM cmlab_probe")}
    finally:
        await conn.close()


@dataclass
class Checker:
    """Every CHECK_EVERY_S: which members are writable (not in recovery). `violations`
    holds each moment two or more were; `writable_at` the last time each was."""

    lab: Lab
    violations: list[tuple[float, list[str]]] = field(default_factory=list)
    writable_at: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _conns: dict[str, asyncpg.Connection] = field(default_factory=dict)

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                answers = await asyncio.gather(*(self._ask(h) for h in self.lab.hosts))
                now = time.monotonic()
                writable = [h.name for h, w in zip(self.lab.hosts, answers, strict=True) if w]
                for name in writable:
                    self.writable_at[name] = now
                if len(writable) > 1:
                    self.violations.append((now, writable))
                self.rounds += 1
                await asyncio.sleep(CHECK_EVERY_S)
        finally:
            for conn in self._conns.values():
                conn.terminate()

    async def _ask(self, host: LabHost) -> bool:
        try:
            conn = self._conns.get(host.name)
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    host=host.socket_dir, port=PG_PORT, user=SUPERUSER,
                    password=self.lab.passwords()[SUPERUSER], database="postgres",
                    timeout=ASK_TIMEOUT_S)
                self._conns[host.name] = conn
            return not await conn.fetchval("SELECT pg_is_in_recovery()",
                                           timeout=ASK_TIMEOUT_S)
        except Exception as exc:  # an observer must outlive anything
            self.errors[type(exc).__name__] += 1
            stale = self._conns.pop(host.name, None)
            if stale is not None:
                stale.terminate()
            return False

    def stop(self) -> None:
        self._stop.set()
