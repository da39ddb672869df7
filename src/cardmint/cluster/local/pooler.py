"""PgBouncer in front of the primary (runbook: add it when connections pass 100).

Transaction pooling on a free loopback port, run as the server OS user, stopped by PID.
Its auth file holds the roles' SCRAM verifiers exactly as pg_authid has them: a client
proves its password to PgBouncer against the verifier, and PgBouncer reuses that proof to
log in to the server, so no password is stored here. `sync_auth` rewrites the file after
`security rotate` and reloads. cluster.json then gives the application role's DSN through
the pooler (`ClusterState.pooler`); the data layer sees the pooler's port and turns off
asyncpg's statement cache (PgBouncer before 1.21 keeps no prepared statements).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from cardmint.cluster.home import free_ports
from cardmint.cluster.pg import nodes, process
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import APP, MONITOR, OWNER, READONLY, ClusterState, save
from cardmint.errors import ClusterError

if TYPE_CHECKING:
    from cardmint.cluster.local.engine import LocalCluster

POOLED_ROLES = (APP, READONLY, OWNER, MONITOR)  # never the superuser or the replicator
POOL_SIZE = 20  # server connections per database/user pair
RESERVE = 5
MAX_DB_CONNECTIONS = 25  # the primary never sees more than this from the pooler
MAX_CLIENTS = 2000
START_TIMEOUT_S = 15.0


def binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).is_file()), None)
    if found is None:
        raise ClusterError("PgBouncer is not installed (Debian: apt-get install pgbouncer; "
                           "`make test` installs it when run as root)")
    return found


def folder(cluster: LocalCluster) -> Path:
    return cluster.home / "pooler"


def config(state: ClusterState, where: Path, port: int, statement_timeout_ms: int) -> str:
    primary = state.primary
    # statement_timeout cannot pass as a startup parameter: PgBouncer sets it per server
    # connection instead (transaction mode never resets it: server_reset_query is unused).
    connect = f"SET statement_timeout = {int(statement_timeout_ms)}"
    target = (f"host={primary.host} port={primary.port} dbname={state.database} "
              f"connect_query='{connect}'")
    return f"""\
; Written by `cardmint pooler up`.
[databases]
{state.database} = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {where / 'userlist.txt'}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
reserve_pool_size = {RESERVE}
reserve_pool_timeout = 1
max_db_connections = {MAX_DB_CONNECTIONS}
max_client_conn = {MAX_CLIENTS}
ignore_startup_parameters = statement_timeout,extra_float_digits
stats_users = {MONITOR}
application_name_add_host = 0
server_check_delay = 10
log_connections = 0
log_disconnections = 0
"""


async def verifiers(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = "
                            "ANY($1::text[]) AND rolpassword LIKE 'SCRAM-SHA-256$%'",
                            list(POOLED_ROLES))
    return {r["rolname"]: r["rolpassword"] for r in rows}


def userlist(found: dict[str, str]) -> str:
    return "".join(f'"{role}" "{verifier}"\n' for role, verifier in sorted(found.items()))


def running_pid(state: ClusterState) -> int | None:
    """The PgBouncer this cluster started, if it still runs (its command line names our
    configuration file: a reused PID is someone else)."""
    pid = (state.pooler or {}).get("pid")
    if not pid or not process.alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"pgbouncer" in cmdline and b"pgbouncer.ini" in cmdline else None


async def _write_files(cluster: LocalCluster, state: ClusterState, user: OsUser,
                       port: int) -> None:
    where = folder(cluster)
    user.own(where)
    conn = await cluster.admin.connect(state.primary, "postgres")
    try:
        found = await verifiers(conn)
    finally:
        await conn.close()
    nodes.write(user, where / "userlist.txt", userlist(found))
    nodes.write(user, where / "pgbouncer.ini",
                config(state, where, port, cluster.settings.statement_timeout_ms))


async def up(cluster: LocalCluster) -> dict[str, Any]:
    """Start PgBouncer before the primary (or, running, re-target and reload it) and point
    the application role's DSN at it."""
    with cluster.lock():
        state = cluster.ready_state()
        exe = binary()
        user = OsUser.resolve(cluster.settings.pg_os_user)
        port = (state.pooler or {}).get("port") or free_ports(1)[0]
        await _write_files(cluster, state, user, port)
        pid = running_pid(state)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)  # new target or auth file: reload, clients stay
            started = False
        else:
            log = cluster.home / "logs" / "pgbouncer.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            pid = user.spawn([exe, str(folder(cluster) / "pgbouncer.ini")], log)
            await _wait_listening(pid, port, log)
            started = True
        state.pooler = {"port": port, "pid": pid, "target": state.primary.name,
                        "pool_mode": "transaction", "max_db_connections": MAX_DB_CONNECTIONS}
        save(state)  # from here on cluster.json's app DSN goes through the pooler
    return {"started": started, **state.pooler}


async def down(cluster: LocalCluster) -> dict[str, Any]:
    """Point the application back at the primary, then stop PgBouncer by PID."""
    with cluster.lock():
        state = cluster.ready_state()
        pid = running_pid(state)
        state.pooler = None
        save(state)
        mode = await stop(pid) if pid is not None else None
        shutil.rmtree(folder(cluster), ignore_errors=True)
    return {"stopped": pid is not None, "pid": pid, "mode": mode}


async def sync_auth(cluster: LocalCluster) -> bool:
    """After a password change: the auth file from pg_authid again, and a reload. False
    when no pooler runs."""
    state = cluster.state()
    if state is None or state.pooler is None:
        return False
    pid = running_pid(state)
    if pid is None:
        return False
    user = OsUser.resolve(cluster.settings.pg_os_user)
    await _write_files(cluster, state, user, state.pooler["port"])
    os.kill(pid, signal.SIGHUP)
    return True


async def stop(pid: int, timeout: float = 10.0) -> str:
    """SIGINT (wait for running transactions), then SIGTERM, then SIGKILL."""
    return await process.escalate(pid, ((signal.SIGINT, "safe", timeout),
                                        (signal.SIGTERM, "immediate", timeout),
                                        (signal.SIGKILL, "kill", timeout)), "PgBouncer")


async def _wait_listening(pid: int, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process.alive(pid):
            raise ClusterError(f"PgBouncer exited while starting: {process.tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            await asyncio.sleep(0.02)
    await stop(pid)
    raise ClusterError(f"PgBouncer not listening on {port} after {START_TIMEOUT_S:.0f} s")


def show(state: ClusterState, password: str, what: str) -> list[dict[str, str]]:
    """SHOW POOLS / SHOW STATS on the admin console (simple protocol only: psql)."""
    assert state.pooler is not None
    done = OsUser(None, os.geteuid(), os.getegid()).run(
        [str(Path(state.bindir) / "psql"), "-h", "127.0.0.1", "-p", str(state.pooler["port"]),
         "-U", MONITOR, "-d", "pgbouncer", "--csv", "-c", f"SHOW {what}"],
        env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}, timeout=15)
    return list(csv.DictReader(io.StringIO(done.stdout)))


async def status(cluster: LocalCluster) -> dict[str, Any]:
    """Whether it runs, where, and its own figures (SHOW POOLS and SHOW STATS)."""
    state = cluster.ready_state(ready=False)
    if state.pooler is None:
        return {"running": False, "configured": False}
    pid = running_pid(state)
    out: dict[str, Any] = {"configured": True, "running": pid is not None, **state.pooler,
                           "pid": pid, "primary": state.primary.name,
                           "stale_target": state.pooler.get("target") != state.primary.name}
    if pid is None:
        return out
    password = cluster.admin.passwords()[MONITOR]
    try:
        pools, stats = await asyncio.gather(
            asyncio.to_thread(show, state, password, "POOLS"),
            asyncio.to_thread(show, state, password, "STATS"))
    except ClusterError as exc:
        out["error"] = str(exc)
        return out
    out["pools"] = [p for p in pools if p.get("database") != "pgbouncer"]
    out["stats"] = [s for s in stats if s.get("database") != "pgbouncer"]
    out["server_connections"] = sum(int(p.get(k) or 0) for p in out["pools"]
                                    for k in ("sv_active", "sv_idle", "sv_used", "sv_tested",
                                              "sv_login"))
    out["client_connections"] = sum(int(p.get(k) or 0) for p in out["pools"]
                                    for k in ("cl_active", "cl_waiting"))
    return out
