"""The local engine: a PostgreSQL primary and N streaming replicas on this machine.

`up` creates or adopts, `down` stops every server by PID, `status` asks each node what it
is. One command at a time holds `$CARDMINT_HOME/.lock` (`cluster.home.locked`), so two
`up`s never race. Failover, rejoin, replicas, resize and the pooler are steps of their own
modules beside this one; they use the public members below (`lock`, `admin`,
`start_node`, `ready_state`, `wait_streaming`).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cardmint.cluster import handover
from cardmint.cluster.engine import (
    ClusterStatus,
    DownReport,
    FailoverReport,
    LogQuery,
    LogReport,
    RejoinReport,
    ReplicaReport,
    Stopped,
    UpReport,
)
from cardmint.cluster.home import create_or_adopt, free_ports, locked, new_home
from cardmint.cluster.home import purge as purge_home
from cardmint.cluster.local import credentials, failover, heal, pooler, rejoin, replicas, resize
from cardmint.cluster.local.heal import Restart
from cardmint.cluster.local.resize import ResizeReport
from cardmint.cluster.pg import backrest, logs, nodes, pgbin, process, replication, roles, tls
from cardmint.cluster.pg.admin import NodeAdmin
from cardmint.cluster.state import (
    FENCED,
    READY,
    REPLICATION,
    SUPERUSER,
    ClusterState,
    Node,
    load,
    save,
)
from cardmint.config import Settings
from cardmint.errors import ClusterError, UsageError

STREAM_TIMEOUT_S = 60.0


class LocalCluster:
    """One cluster under `settings.home`. Methods are async; blocking programs (initdb,
    pg_basebackup) run in a worker thread so an event loop keeps turning."""

    provider = "local"

    def __init__(self, settings: Settings, *, template: Path | None = None) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.template = template or settings.pg_template
        self.admin = NodeAdmin(settings)
        for ch in "'\"\\\n":
            if ch in str(self.home):
                raise UsageError(f"CARDMINT_HOME may not contain {ch!r}: {self.home}")

    # -- paths, secrets, state, lock ----------------------------------------------

    @property
    def archive(self) -> Path:
        """pgBackRest's directory (its configuration, spool, locks and log)."""
        return self.home / "pgbackrest"

    def log(self, node: Node) -> Path:
        return self.home / "logs" / f"{node.name}.log"

    def passwords(self) -> dict[str, str]:
        return self.admin.passwords()

    def state(self) -> ClusterState | None:
        return load(self.home)

    def ready_state(self, *, ready: bool = True) -> ClusterState:
        """The saved state; with `ready`, only once `up` has finished making it."""
        state = load(self.home)
        if state is None:
            raise self.settings.no_cluster()
        if ready and state.status != READY:
            raise ClusterError(f"the cluster in {self.home} is not ready: `cardmint cluster up` "
                               "was cut off; run it again to finish or clean up")
        return state

    @contextmanager
    def lock(self) -> Iterator[None]:
        with locked(self.home):
            yield

    async def start_node(self, pg: pgbin.PgBin, user: process.OsUser, node: Node,
                         stuck_after: float | None = None) -> int:
        """Start `node`'s server and wait until it accepts connections; its PID.
        `stuck_after`: see `process.wait_ready`."""
        return await nodes.start(pg, user, node, self.log(node), stuck_after)

    # -- up ------------------------------------------------------------------------

    async def up(self, replicas: int | None = None, sync: bool | None = None) -> UpReport:
        """Create the cluster, or adopt the one already here, starting any stopped node."""
        return await create_or_adopt(self, replicas, sync)

    async def adopt(self, state: ClusterState, replicas: int | None,
                    sync: bool | None) -> UpReport:
        user = process.OsUser.resolve(self.settings.pg_os_user)
        pg = pgbin.PgBin(Path(state.bindir), state.pg_version)
        started = []
        for node in sorted(state.nodes, key=lambda n: n.role != "primary"):
            if node.role == FENCED:
                continue  # a former primary starts again only through `cluster rejoin`
            datadir = Path(node.datadir)
            if not (datadir / "PG_VERSION").is_file():
                raise ClusterError(
                    f"node {node.name}'s data directory {datadir} is missing or broken; "
                    "run `cardmint cluster down --purge` and `cardmint cluster up` again"
                )
            pid = process.postmaster_pid(datadir)
            if pid is None:
                pid = await self.start_node(pg, user, node)
                started.append(node.name)
            node.pid = pid
        save(state)
        if started:
            await self.wait_streaming(state)
        return UpReport(created=False, adopted=True, started=started)

    async def create(self, replicas: int, sync: bool) -> UpReport:
        user = process.OsUser.resolve(self.settings.pg_os_user)
        pg = pgbin.find(self.settings.pg_bindir)
        passwords = new_home(self.settings, self.home, user)
        ports = free_ports(replicas + 1)
        state = ClusterState(
            home=str(self.home), bindir=str(pg.bindir), pg_version=pg.version,
            os_user=user.name, sync=sync,
            nodes=[
                Node(name=f"node{i + 1}", role="primary" if i == 0 else "replica", port=port,
                     datadir=str(self.home / "nodes" / f"node{i + 1}"))
                for i, port in enumerate(ports)
            ],
        )
        save(state)  # status "creating": a killed `up` is recognised and cleaned next time
        (self.home / "nodes").mkdir(exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        user.own(self.archive)
        s = self.settings
        await asyncio.to_thread(tls.ensure, self.home / "tls", user, cert=s.tls_cert_file,
                                key=s.tls_key_file, ca=s.tls_ca_file)

        primary = state.primary
        backrest.prepare(self.home, s.secrets_path, user,
                         backrest.Pg(primary.datadir, primary.port), new=True)
        await self._init_primary(pg, user, primary, passwords)
        primary.pid = await self.start_node(pg, user, primary)
        save(state)
        await self._bootstrap(state, passwords)
        await asyncio.to_thread(backrest.stanza_create, self.home, user, passwords[SUPERUSER])
        for node in state.replicas:
            await self._make_replica(pg, user, state, node, passwords[REPLICATION])
            save(state)
        await self.wait_streaming(state)
        if sync and state.replicas:
            names = ", ".join(n.name for n in state.replicas)
            await self.admin.execute(
                state.primary,
                f"ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ({names})'",
                "SELECT pg_reload_conf()",
            )
            await self.wait_streaming(state, sync=True)
        state.status = READY
        save(state)
        return UpReport(created=True, adopted=False, started=[n.name for n in state.nodes])

    async def _init_primary(self, pg: pgbin.PgBin, user: process.OsUser, node: Node,
                            passwords: dict[str, str]) -> None:
        datadir = Path(node.datadir)
        if self.template is not None:
            if not (self.template / "PG_VERSION").is_file():
                await asyncio.to_thread(nodes.make_template, pg, user, self.template)
            await asyncio.to_thread(nodes.copy_template, user, self.template, datadir)
            verifier = roles.scram_verifier(passwords[SUPERUSER])
            await asyncio.to_thread(nodes.set_superuser_password, pg, user, datadir, verifier)
        else:
            await asyncio.to_thread(nodes.initdb, pg, user, datadir, passwords[SUPERUSER])
        nodes.configure(user, node, self.archive)

    async def _make_replica(self, pg: pgbin.PgBin, user: process.OsUser, state: ClusterState,
                            node: Node, password: str) -> None:
        primary = state.primary
        await asyncio.to_thread(nodes.base_backup, pg, user, primary, node, password)
        nodes.configure(user, node, self.archive)
        rejoin.point_at(user, node, primary, password)  # the password in a 0600 passfile
        node.pid = await self.start_node(pg, user, node)

    async def _bootstrap(self, state: ClusterState, passwords: dict[str, str]) -> None:
        """Roles, the application database and its default privileges."""
        await self.admin.execute(state.primary, *roles.cluster_sql(passwords, state.database),
                                 password=passwords[SUPERUSER])
        await self.admin.execute(state.primary, *roles.database_sql(), database=state.database,
                                 password=passwords[SUPERUSER])

    async def wait_streaming(self, state: ClusterState, sync: bool = False) -> None:
        """Until every replica streams from the primary; with `sync`, until each has taken
        up its synchronous role too (walsenders read a reload in their own time)."""
        if not state.replicas:
            return
        wanted = [n.name for n in state.replicas]
        conn = await self.admin.connect(state.primary, "postgres")
        try:
            found = await replication.wait_streaming(conn, wanted, sync=sync,
                                                     timeout=STREAM_TIMEOUT_S)
        finally:
            await conn.close()
        if found != set(wanted):
            raise ClusterError(f"replicas {sorted(set(wanted) - found)} not streaming after "
                               f"{STREAM_TIMEOUT_S:.0f} s")

    # -- down ----------------------------------------------------------------------

    async def down(self, purge: bool = False) -> DownReport:
        """Stop every server of the cluster by PID (primary first, so that its replicas
        receive its last WAL); with `purge`, delete the cluster's files as well."""
        report = DownReport()
        with self.lock():
            state = load(self.home)
            if state is not None:
                pooler_pid = pooler.running_pid(state)  # PgBouncer first: it serves no one now
                if pooler_pid is not None:
                    report.stopped.append(Stopped("pgbouncer", pooler_pid,
                                                  await pooler.stop(pooler_pid)))
                for node in sorted(state.nodes, key=lambda n: n.role != "primary"):
                    pid = process.postmaster_pid(Path(node.datadir))
                    if pid is None and node.pid and process.alive(node.pid):
                        pid = node.pid if process.is_postgres(node.pid) else None
                    if pid is not None:
                        report.stopped.append(Stopped(node.name, pid, await process.stop(pid)))
                    node.pid = None
                await backrest.stop_async(self.home)
                if not purge:
                    save(state)
            if purge:
                report.kept = purge_home(self.home, ("nodes", "pgbackrest", "logs", "tls"))
                report.purged = True
        return report

    async def clean(self, state: ClusterState | None) -> None:
        """Remove a half-created cluster, stopping whatever it left running."""
        for node_dir in sorted(p for p in (self.home / "nodes").glob("*") if p.is_dir()):
            pid = process.postmaster_pid(node_dir)
            if pid is not None:
                await process.stop(pid)
        for node in state.nodes if state else []:
            if node.pid and process.alive(node.pid) and process.is_postgres(node.pid):
                await process.stop(node.pid)
        for name in ("nodes", "pgbackrest"):
            shutil.rmtree(self.home / name, ignore_errors=True)

    # -- status --------------------------------------------------------------------

    async def status(self) -> ClusterStatus:
        """The contract of `cluster status --json`: each node as the node itself reports."""
        state = self.ready_state(ready=False)
        return ClusterStatus(provider=self.provider, home=str(self.home), status=state.status,
                             sync=state.sync, nodes=await self.admin.probe_all(state))

    # -- failover (failover.py, rejoin.py) -----------------------------------------

    async def failover(self, to: str | None = None, *,
                       conns: handover.Conns | None = None) -> FailoverReport:
        """Fence the primary, promote `to` (or the replica with the most WAL), repoint."""
        return await failover.failover(self, to, conns=conns)

    async def switchover(self, to: str | None = None) -> FailoverReport:
        """Planned failover that loses nothing; the old primary rejoins as a replica."""
        return await failover.switchover(self, to)

    async def rejoin(self, name: str) -> RejoinReport:
        """A fenced or broken node back as a replica (pg_rewind, else a base backup)."""
        return await failover.rejoin_named(self, name)

    async def heal(self) -> list[Restart]:
        """Restart any node whose postmaster died (not a fenced one); see heal.py."""
        return await heal.heal(self)

    # -- scaling (replicas.py, resize.py, pooler.py) -------------------------------

    async def add_replica(self, sync: bool = False) -> ReplicaReport:
        """A new streaming replica cloned from the primary, recorded once it streams."""
        return await replicas.add_replica(self, sync=sync)

    async def remove_replica(self, name: str) -> ReplicaReport:
        """A replica drained, stopped by PID, its slot dropped and its data deleted."""
        return await replicas.remove_replica(self, name)

    async def resize(self, *, memory: str | None = None, cpu: int | None = None,
                     vm_size: str | None = None) -> ResizeReport:
        """Memory- and CPU-derived settings on every node by a rolling restart."""
        if memory is None or vm_size is not None:
            raise UsageError("resize takes --memory (and --cpu); --vm-size is for Fly")
        return await resize.resize(self, memory, cpu)

    async def pooler(self, action: str) -> dict[str, Any]:
        """PgBouncer before the primary: `up`, `down` or `status`."""
        steps = {"up": pooler.up, "down": pooler.down, "status": pooler.status}
        if action not in steps:
            raise UsageError(f"pooler takes up, down or status, not {action!r}")
        return await steps[action](self)

    # -- credentials (ops/security/rotate.py) --------------------------------------

    async def refresh(self) -> None:
        """Nothing to do: only CardMint changes the local engine's roles."""

    async def apply_password(self, role: str, password: str) -> None:
        await credentials.apply_password(self, role, password)

    async def credentials_saved(self, role: str) -> str:
        return ""

    # -- logs and connect ----------------------------------------------------------

    async def logs(self, query: LogQuery) -> LogReport:
        return logs.read(self.ready_state(ready=False), query)

    def follow_logs(self, query: LogQuery) -> AsyncIterator[dict[str, Any]]:
        return logs.follow_query(self.ready_state(ready=False), query)

    async def resolve(self, name: str | None) -> Node:
        """A node by name, or by the role it has now (`primary`, `replica`)."""
        state = self.ready_state(ready=False)
        name = name or "primary"
        if name not in ("primary", "replica"):
            try:
                return state.node(name)
            except LookupError as exc:
                raise UsageError(str(exc)) from None
        for probe in (await self.status()).nodes:
            if probe.running and probe.role == name and probe.error is None:
                return state.node(probe.name)
        raise ClusterError(f"no running {name} in the cluster")

    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment for psql on a node's application database."""
        node = await self.resolve(name)
        return self.admin.psql_command(self.ready_state(ready=False), node, args)
