"""A rotated password on the local engine: PgBouncer's auth file, and the replicas'
password file when the replication role's password changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cardmint.cluster.local import pooler, rejoin
from cardmint.cluster.pg import replication
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import REPLICATION

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

RECONNECT_TIMEOUT_S = 15.0


async def apply_password(cluster: LocalCluster, role: str, password: str) -> None:
    await pooler.sync_auth(cluster)  # PgBouncer's auth file holds the verifiers
    if role == REPLICATION:
        await point_replicas(cluster, password)


async def point_replicas(cluster: LocalCluster, password: str) -> None:
    """Give every replica the replication password, in its password file (never in
    primary_conninfo: a changed setting is logged, and ALTER SYSTEM is kept by
    pg_stat_statements), then end its WAL sender on the primary and wait until it
    streams again: a new login with the new password, proved."""
    state = cluster.ready_state(ready=False)
    user = OsUser.resolve(cluster.settings.pg_os_user)
    for node in state.replicas:
        rejoin.write_passfile(user, node, password)
    if not state.replicas:
        return
    conn = await cluster.admin.connect(state.primary, "postgres",
                                       application="cardmint-rotate")
    try:
        await replication.reconnect(conn, [n.name for n in state.replicas],
                                    timeout=RECONNECT_TIMEOUT_S)
    finally:
        await conn.close()
