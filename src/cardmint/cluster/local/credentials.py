"""A rotated password on the local engine: PgBouncer's auth file, and the replicas'
connection to the primary when the replication role's password changed."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from cardmint.cluster.local import pooler
from cardmint.cluster.pg.nodes import conf_string
from cardmint.cluster.state import REPLICATION
from cardmint.errors import ClusterError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

RECONNECT_TIMEOUT_S = 15.0


async def apply_password(cluster: LocalCluster, role: str, password: str) -> None:
    await pooler.sync_auth(cluster)  # PgBouncer's auth file holds the verifiers
    if role == REPLICATION:
        await point_replicas(cluster, password)


async def point_replicas(cluster: LocalCluster, password: str) -> None:
    """Give every replica the replication password and wait until it streams with it (a
    changed primary_conninfo restarts the WAL receiver on reload)."""
    state = cluster.ready_state(ready=False)
    primary = state.primary
    for node in state.replicas:
        conninfo = (f"host={primary.host} port={primary.port} user={REPLICATION} "
                    f"password={password} application_name={node.name}")
        conn = await cluster.admin.connect(node, "postgres", application="cardmint-rotate")
        try:
            before = await conn.fetchval("SELECT pid FROM pg_stat_wal_receiver")
            await conn.execute(f"ALTER SYSTEM SET primary_conninfo = {conf_string(conninfo)}")
            await conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + RECONNECT_TIMEOUT_S
            while True:
                row = await conn.fetchrow("SELECT pid, status FROM pg_stat_wal_receiver")
                if row and row["pid"] != before and row["status"] == "streaming":
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"{node.name} did not reconnect with the new "
                                       "replication password")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
