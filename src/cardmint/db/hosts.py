"""Connecting through a multi-host DSN with a time limit per host, as libpq does.

asyncpg tries a DSN's hosts in turn under ONE time limit for all of them. A host whose
network is cut drops the SYN silently, so the first host in the list, when it is the
cut-off old leader, takes the whole limit and the new leader behind it is never
reached: the application would wait for the partition to heal. Here each host gets its
share of the limit, and a host that could not be reached lately is tried last, so once
it has failed a new connection goes straight to the others.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cardmint.db import errors

# A host unreachable this recently goes to the end of the order.
UNREACHABLE_FOR_S = 60.0


def hosts_of(dsn: str) -> list[str]:
    """The `host:port` parts of a DSN's netloc (one for a single-host DSN)."""
    netloc = urlsplit(dsn).netloc
    return netloc.rsplit("@", 1)[-1].split(",")


def on_host(dsn: str, host: str) -> str:
    """The same DSN for one of its hosts."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=userinfo + host))


class HostOrder:
    """The connect function of a pool (asyncpg's `connect=`): for a multi-host DSN, one
    host at a time, each with `timeout / hosts`, hosts unreachable lately last."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._unreachable: dict[str, float] = {}

    def order(self, hosts: list[str]) -> list[str]:
        """The DSN's order, but hosts unreachable lately last (a stable sort)."""
        now = self._clock()
        return sorted(hosts, key=lambda h: h in self._unreachable
                      and now - self._unreachable[h] < UNREACHABLE_FOR_S)

    async def connect(self, dsn: str | None = None, *, timeout: float = 60.0,
                      **kwargs: Any) -> asyncpg.Connection:
        if dsn is None:  # the pools always pass theirs
            raise ValueError("HostOrder.connect needs a DSN")
        hosts = hosts_of(dsn)
        if len(hosts) == 1:
            return await asyncpg.connect(dsn, timeout=timeout, **kwargs)
        share = timeout / len(hosts)
        last: BaseException | None = None
        for host in self.order(hosts):
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    on_host(dsn, host), timeout=share, **kwargs)
            except errors.CONNECTION_ERRORS as exc:  # unreachable, or not read-write
                if isinstance(exc, OSError):  # no answer in time (TimeoutError), refused
                    self._unreachable[host] = self._clock()
                last = exc
                continue
            self._unreachable.pop(host, None)
            return conn
        assert last is not None
        raise last
