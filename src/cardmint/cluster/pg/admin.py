"""Superuser work on one node: connecting with the secrets file's password, running
statements, asking the node what it is, and psql's argv for `cluster connect`.

Every engine that runs PostgreSQL nodes itself (local, Patroni) and the ops procedures
that need a node's superuser connection use this one piece.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from cardmint import secretfile
from cardmint.cluster.engine import NodeStatus
from cardmint.cluster.pg import process
from cardmint.cluster.pg.probe import NODE_SQL, parse_lsn
from cardmint.cluster.state import FENCED, ROLES, SUPERUSER, ClusterState, Node
from cardmint.config import Settings
from cardmint.dsn import redact
from cardmint.errors import ClusterError


async def one_row(conn: asyncpg.Connection, sql: str, *args: object) -> asyncpg.Record:
    """The row of a query that always returns one (a SELECT of expressions)."""
    row = await conn.fetchrow(sql, *args)
    if row is None:
        raise ClusterError(f"no row from {sql.split()[0]} on the node")
    return row


class NodeAdmin:
    """Superuser connections to a cluster's nodes, with passwords from its secrets file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def passwords(self) -> dict[str, str]:
        pairs = secretfile.read(self.settings.secrets_path)
        return {role: pairs.get(secretfile.role_key(role), "") for role in ROLES}

    async def connect(self, node: Node, database: str = "postgres", *,
                      password: str | None = None, timeout: float = 10,
                      application: str = "cardmint-admin") -> asyncpg.Connection:
        password = password or self.passwords()[SUPERUSER]
        try:
            return await asyncpg.connect(
                host=node.host, port=node.port, user=SUPERUSER, password=password,
                database=database, timeout=timeout,
                server_settings={"application_name": application},
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ClusterError(f"cannot reach {node.name} ({node.host}:{node.port}): "
                               f"{redact(str(exc)) or type(exc).__name__}") from exc

    async def execute(self, node: Node, *sql: str, database: str = "postgres",
                      password: str | None = None) -> None:
        conn = await self.connect(node, database, password=password)
        try:
            for statement in sql:
                await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            raise ClusterError(f"bootstrap failed: {redact(str(exc))}") from exc
        finally:
            await conn.close()

    async def probe(self, node: Node) -> NodeStatus:
        """What `node` says it is (role, timeline, LSN, lag, its standbys), or why not."""
        pid = process.postmaster_pid(Path(node.datadir))
        out = NodeStatus(name=node.name, role=node.role, host=node.host, port=node.port,
                         running=pid is not None, pid=pid)
        if node.role == FENCED:
            # the contract knows primary and replica: a fenced node is a replica-to-be
            out.role, out.state = "replica", "fenced"  # until `cardmint cluster rejoin NODE`
            return out
        if pid is None:
            out.state = "stopped"
            return out
        try:
            conn = await self.connect(node, "postgres", timeout=3)
        except ClusterError as exc:
            out.error, out.state = str(exc), "unreachable"
            return out
        try:
            row = await one_row(conn, NODE_SQL)
            replication = await conn.fetch(
                "SELECT application_name, state, sync_state FROM pg_stat_replication")
        finally:
            await conn.close()
        out.role = "replica" if row["in_recovery"] else "primary"
        out.timeline, out.lsn = row["timeline"], row["lsn"]
        out.lsn_value = parse_lsn(row["lsn"])
        if row["in_recovery"]:
            out.state = "streaming" if row["streaming"] else "recovering"
            out.lag_s = round(row["lag_s"], 3)
        else:
            out.state, out.lag_bytes, out.lag_s = "accepting writes", 0, 0.0
            out.replicas = [dict(r) for r in replication]
        return out

    async def probe_all(self, state: ClusterState) -> list[NodeStatus]:
        """Every node's own word, with each replica's lag in bytes behind the primary."""
        found = list(await asyncio.gather(*(self.probe(n) for n in state.nodes)))
        primary_lsn = next((n.lsn_value for n in found if n.role == "primary" and n.running
                            and n.lsn_value is not None), None)
        for status in found:
            if (status.role == "replica" and primary_lsn is not None
                    and status.lsn_value is not None):
                status.lag_bytes = max(0, primary_lsn - status.lsn_value)
        return found

    def psql_command(self, state: ClusterState, node: Node,
                     args: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment for psql on `node`'s application database."""
        psql = str(Path(state.bindir) / "psql")
        argv = [psql, "-h", node.host, "-p", str(node.port), "-U", SUPERUSER,
                "-d", state.database, *args]
        return argv, {"PGPASSWORD": self.passwords()[SUPERUSER],
                      "PGAPPNAME": "cardmint-connect"}
