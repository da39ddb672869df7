"""Is a DSN a connection pooler? The settings' topology knows PgBouncer's port (the local
cluster records it in cluster.json); a DSN to that port goes through it. PgBouncer before
1.21 in transaction mode keeps no prepared statements across transactions, so asyncpg's
statement cache must be off there; the user is never asked."""

from __future__ import annotations

from urllib.parse import urlsplit

from cardmint import inputs
from cardmint.config import Settings


def pooler_ports(settings: Settings) -> set[int]:
    return settings.topology.pooler_ports() if settings.topology is not None else set()


def dsn_ports(dsn: str) -> set[int]:
    try:
        hosts = urlsplit(dsn).netloc.rsplit("@", 1)[-1]
    except ValueError:
        return set()
    ports = set()
    for host in hosts.split(","):
        _, _, port = host.rpartition(":")
        if inputs.is_digits(port):
            ports.add(int(port))
    return ports


def behind_pooler(dsn: str, settings: Settings) -> bool:
    ports = pooler_ports(settings)
    return bool(ports) and bool(dsn_ports(dsn) & ports)
