"""The local engine: a PostgreSQL primary and N streaming replicas on this machine.

`up` creates or adopts, `down` stops every server by PID, `status` asks each node what it
is. One command at a time holds `$CARDMINT_HOME/.lock`, so two `up`s never race.
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from cardmint import secretfile
from cardmint.cluster.local import failover, pooler, replicas
from cardmint.cluster.local.rejoin import RejoinReport
from cardmint.cluster.pg import nodes, pgbin, process, roles, tls
from cardmint.cluster.pg.probe import NODE_SQL, parse_lsn
from cardmint.cluster.state import (
    READY,
    REPLICATION,
    SUPERUSER,
    ClusterState,
    Node,
    load,
    save,
)
from cardmint.config import Settings
from cardmint.dsn import redact
from cardmint.errors import ClusterError, UsageError

LOCK_TIMEOUT_S = 120.0
STREAM_TIMEOUT_S = 60.0


@dataclass
class UpReport:
    created: bool
    adopted: bool
    started: list[str] = field(default_factory=list)
    cleaned: bool = False
    duration_s: float = 0.0


@dataclass
class DownReport:
    stopped: list[dict[str, Any]] = field(default_factory=list)
    purged: bool = False


class LocalCluster:
    """One cluster under `settings.home`. Methods are async; blocking programs (initdb,
    pg_basebackup) run in a worker thread so an event loop keeps turning."""

    provider = "local"

    def __init__(self, settings: Settings, *, template: Path | None = None) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.template = template or settings.pg_template
        for ch in "'\"\\\n":
            if ch in str(self.home):
                raise UsageError(f"CARDMINT_HOME may not contain {ch!r}: {self.home}")

    # -- paths and secrets ---------------------------------------------------------

    @property
    def archive(self) -> Path:
        return self.home / "wal-archive"

    def log(self, node: Node) -> Path:
        return self.home / "logs" / f"{node.name}.log"

    def passwords(self) -> dict[str, str]:
        pairs = secretfile.read(self.settings.secrets_path)
        return {role: pairs.get(secretfile.role_key(role), "") for role in roles.ROLES}

    def state(self) -> ClusterState | None:
        return load(self.home)

    # -- up ------------------------------------------------------------------------

    async def up(self, replicas: int | None = None, sync: bool | None = None) -> UpReport:
        """Create the cluster, or adopt the one already here, starting any stopped node."""
        return await create_or_adopt(self, self._lock(), replicas, sync)

    async def _adopt(self, state: ClusterState, replicas: int | None,
                     sync: bool | None) -> UpReport:
        user = process.OsUser.resolve(self.settings.pg_os_user)
        pg = pgbin.PgBin(Path(state.bindir), state.pg_version)
        started = []
        for node in sorted(state.nodes, key=lambda n: n.role != "primary"):
            if node.role == failover.FENCED:
                continue  # a former primary starts again only through `cluster rejoin`
            datadir = Path(node.datadir)
            if not (datadir / "PG_VERSION").is_file():
                raise ClusterError(
                    f"node {node.name}'s data directory {datadir} is missing or broken; "
                    "run `cardmint cluster down --purge` and `cardmint cluster up` again"
                )
            pid = process.postmaster_pid(datadir)
            if pid is None:
                pid = await self._start(pg, user, node)
                started.append(node.name)
            node.pid = pid
        save(state)
        if started:
            await self._wait_streaming(state)
        return UpReport(created=False, adopted=True, started=started)

    async def _create(self, replicas: int, sync: bool) -> UpReport:
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
        await self._init_primary(pg, user, primary, passwords)
        primary.pid = await self._start(pg, user, primary)
        save(state)
        await self._bootstrap(state, passwords)
        for node in state.replicas:
            await self._make_replica(pg, user, state, node, passwords[REPLICATION])
            save(state)
        await self._wait_streaming(state)
        if sync and state.replicas:
            names = ", ".join(n.name for n in state.replicas)
            await self._admin_execute(
                state, f"ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ({names})'",
                "SELECT pg_reload_conf()",
            )
            await self._wait_streaming(state, sync=True)
        state.status = READY
        save(state)
        return UpReport(created=True, adopted=False, started=[n.name for n in state.nodes])

    async def _init_primary(self, pg: pgbin.PgBin, user: process.OsUser, node: Node,
                            passwords: dict[str, str]) -> None:
        datadir = Path(node.datadir)
        if self.template is not None:
            if not (self.template / "PG_VERSION").is_file():
                await asyncio.to_thread(make_template, pg, user, self.template)
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
        nodes.make_standby(user, node, primary, password)
        node.pid = await self._start(pg, user, node)

    async def _start(self, pg: pgbin.PgBin, user: process.OsUser, node: Node) -> int:
        datadir = Path(node.datadir)
        # A postmaster.pid whose process is gone (or is someone else) would block startup.
        if (datadir / "postmaster.pid").exists() and process.postmaster_pid(datadir) is None:
            (datadir / "postmaster.pid").unlink()
        log = self.log(node)
        log.parent.mkdir(parents=True, exist_ok=True)
        pid = user.spawn([pg("postgres"), "-D", str(datadir)], log)
        await process.wait_ready(datadir, pid, log)
        return pid

    async def _bootstrap(self, state: ClusterState, passwords: dict[str, str]) -> None:
        """Roles, the application database and its default privileges."""
        await self._admin_execute(state, *roles.cluster_sql(passwords, state.database),
                                  password=passwords[SUPERUSER])
        await self._admin_execute(state, *roles.database_sql(), database=state.database,
                                  password=passwords[SUPERUSER])

    async def _wait_streaming(self, state: ClusterState, sync: bool = False) -> None:
        """Until every replica streams from the primary; with `sync`, until each has taken
        up its synchronous role too (walsenders read a reload in their own time)."""
        if not state.replicas:
            return
        wanted = {n.name for n in state.replicas}
        deadline = time.monotonic() + STREAM_TIMEOUT_S
        conn = await self._admin_connect(state.primary, "postgres")
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT application_name, sync_state FROM pg_stat_replication "
                    "WHERE state = 'streaming'"
                )
                streaming = {r["application_name"] for r in rows}
                if wanted <= streaming and (not sync or all(
                        r["sync_state"] in ("sync", "potential", "quorum") for r in rows)):
                    return
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"replicas {sorted(wanted)} not streaming after {STREAM_TIMEOUT_S:.0f} s"
                    )
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    # -- down ----------------------------------------------------------------------

    async def down(self, purge: bool = False) -> DownReport:
        """Stop every server of the cluster by PID (primary first, so that its replicas
        receive its last WAL); with `purge`, delete the cluster's files as well."""
        report = DownReport()
        with self._lock():
            state = load(self.home)
            if state is not None:
                pooler_pid = pooler.running_pid(state)  # PgBouncer first: it serves no one now
                if pooler_pid is not None:
                    mode = await pooler.stop(pooler_pid)
                    report.stopped.append({"node": "pgbouncer", "pid": pooler_pid, "mode": mode})
                for node in sorted(state.nodes, key=lambda n: n.role != "primary"):
                    pid = process.postmaster_pid(Path(node.datadir))
                    if pid is None and node.pid and process.alive(node.pid):
                        pid = node.pid if _is_postgres(node.pid) else None
                    if pid is not None:
                        mode = await process.stop(pid)
                        report.stopped.append({"node": node.name, "pid": pid, "mode": mode})
                    node.pid = None
                if not purge:
                    save(state)
            if purge:
                for name in ("nodes", "wal-archive", "logs", "tls"):
                    shutil.rmtree(self.home / name, ignore_errors=True)
                for name in ("cluster.json", "secrets.env"):
                    (self.home / name).unlink(missing_ok=True)
                report.purged = True
        return report

    async def _clean(self, state: ClusterState | None) -> None:
        """Remove a half-created cluster, stopping whatever it left running."""
        for node_dir in sorted((self.home / "nodes").glob("*")):
            pid = process.postmaster_pid(node_dir)
            if pid is not None:
                await process.stop(pid)
        for node in state.nodes if state else []:
            if node.pid and process.alive(node.pid) and _is_postgres(node.pid):
                await process.stop(node.pid)
        for name in ("nodes", "wal-archive"):
            shutil.rmtree(self.home / name, ignore_errors=True)

    # -- status --------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The contract of `cluster status --json`: each node as the node itself reports."""
        state = load(self.home)
        if state is None:
            raise ClusterError(f"no cluster in {self.home}: run `cardmint cluster up`")
        probes = await asyncio.gather(*(self._probe(state, n) for n in state.nodes))
        primary_lsn = next((p["_lsn_int"] for p in probes if p["role"] == "primary"
                            and p["running"] and p["_lsn_int"] is not None), None)
        for probe in probes:
            lsn = probe.pop("_lsn_int")
            if probe["role"] == "replica" and primary_lsn is not None and lsn is not None:
                probe["lag_bytes"] = max(0, primary_lsn - lsn)
        return {"provider": self.provider, "home": str(self.home), "status": state.status,
                "sync": state.sync, "nodes": probes}

    async def _probe(self, state: ClusterState, node: Node) -> dict[str, Any]:
        pid = process.postmaster_pid(Path(node.datadir))
        out: dict[str, Any] = {
            "name": node.name, "role": node.role, "host": node.host, "port": node.port,
            "running": pid is not None, "pid": pid, "timeline": None, "lsn": None,
            "lag_bytes": None, "lag_s": None, "state": None, "error": None, "_lsn_int": None,
        }
        if node.role == failover.FENCED:
            # the contract knows primary and replica: a fenced node is a replica-to-be
            out["role"] = "replica"
            out["state"] = "fenced"  # until `cardmint cluster rejoin NODE`
            return out
        if pid is None:
            out["state"] = "stopped"
            return out
        try:
            conn = await self._admin_connect(node, "postgres", timeout=3)
        except ClusterError as exc:
            out["error"] = str(exc)
            out["state"] = "unreachable"
            return out
        try:
            row = await conn.fetchrow(NODE_SQL)
            replication = await conn.fetch(
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            )
        finally:
            await conn.close()
        out["role"] = "replica" if row["in_recovery"] else "primary"
        out["timeline"] = row["timeline"]
        out["lsn"] = row["lsn"]
        out["_lsn_int"] = parse_lsn(row["lsn"])
        if row["in_recovery"]:
            out["state"] = "streaming" if row["streaming"] else "recovering"
            out["lag_s"] = round(row["lag_s"], 3)
        else:
            out["state"] = "accepting writes"
            out["lag_bytes"] = 0
            out["lag_s"] = 0.0
            out["replicas"] = [dict(r) for r in replication]
        return out

    # -- failover (cluster/failover.py, cluster/rejoin.py) -------------------------

    async def failover(self, to: str | None = None, *,
                       conns: failover.Conns | None = None) -> failover.FailoverReport:
        """Fence the primary, promote `to` (or the replica with the most WAL), repoint."""
        return await failover.failover(self, to, conns=conns)

    async def switchover(self, to: str | None = None) -> failover.FailoverReport:
        """Planned failover that loses nothing; the old primary rejoins as a replica."""
        return await failover.switchover(self, to)

    async def rejoin(self, name: str) -> RejoinReport:
        """A fenced or broken node back as a replica (pg_rewind, else a base backup)."""
        return await failover.rejoin_named(self, name)

    # -- read replicas (cluster/replicas.py) ---------------------------------------

    async def add_replica(self, sync: bool = False) -> replicas.ReplicaReport:
        """A new streaming replica cloned from the primary, recorded once it streams."""
        return await replicas.add_replica(self, sync=sync)

    async def remove_replica(self, name: str) -> replicas.ReplicaReport:
        """A replica drained, stopped by PID, its slot dropped and its data deleted."""
        return await replicas.remove_replica(self, name)

    # -- connect -------------------------------------------------------------------

    async def resolve(self, name: str | None) -> Node:
        """A node by name, or by the role it has now (`primary`, `replica`)."""
        state = load(self.home)
        if state is None:
            raise ClusterError(f"no cluster in {self.home}: run `cardmint cluster up`")
        name = name or "primary"
        if name not in ("primary", "replica"):
            try:
                return state.node(name)
            except LookupError as exc:
                raise UsageError(str(exc)) from None
        report = await self.status()
        for probe in report["nodes"]:
            if probe["running"] and probe["role"] == name and probe["error"] is None:
                return state.node(probe["name"])
        raise ClusterError(f"no running {name} in the cluster")

    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment for psql on a node's application database."""
        node = await self.resolve(name)
        state = load(self.home)
        assert state is not None
        psql = str(Path(state.bindir) / "psql")
        argv = [psql, "-h", node.host, "-p", str(node.port), "-U", SUPERUSER,
                "-d", state.database, *args]
        return argv, {"PGPASSWORD": self.passwords()[SUPERUSER], "PGAPPNAME": "cardmint-connect"}

    # -- helpers -------------------------------------------------------------------

    async def _admin_connect(self, node: Node, database: str, *, password: str | None = None,
                             timeout: float = 10) -> asyncpg.Connection:
        password = password or self.passwords()[SUPERUSER]
        try:
            return await asyncpg.connect(
                host=node.host, port=node.port, user=SUPERUSER, password=password,
                database=database, timeout=timeout,
                server_settings={"application_name": "cardmint-admin"},
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ClusterError(f"cannot reach {node.name} ({node.host}:{node.port}): "
                               f"{redact(str(exc)) or type(exc).__name__}") from exc

    async def _admin_execute(self, state: ClusterState, *sql: str, database: str = "postgres",
                             password: str | None = None) -> None:
        conn = await self._admin_connect(state.primary, database, password=password)
        try:
            for statement in sql:
                await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            raise ClusterError(f"bootstrap failed: {redact(str(exc))}") from exc
        finally:
            await conn.close()

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as handle:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"another cardmint command holds {self.home}/.lock"
                        ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def new_home(settings: Settings, home: Path, user: process.OsUser,
             **extra_secrets: str) -> dict[str, str]:
    """The home of a cluster being created: made (open to the server's OS user, which must
    reach it), with a new password per role in its secrets file. Returns the passwords."""
    fresh = not home.exists()
    home.mkdir(parents=True, exist_ok=True)
    if fresh:
        home.chmod(0o755)
    user.check_reachable(home)
    passwords = roles.new_passwords()
    secretfile.write(settings.secrets_path, {
        **secretfile.read(settings.secrets_path),
        **{secretfile.role_key(r): p for r, p in passwords.items()},
        **extra_secrets,
    })
    return passwords


async def create_or_adopt(engine: Any, lock: AbstractContextManager[None],
                          replicas: int | None, sync: bool | None) -> UpReport:
    """Every engine's `up`, under the home's lock: adopt a ready cluster of this engine,
    else clean what a killed `up` left (never reused) and create. `engine` has `home`,
    `provider`, `_adopt`, `_clean` and `_create`."""
    if replicas is not None and replicas < 0:
        raise UsageError("--replicas must be 0 or more")
    began = time.monotonic()
    with lock:
        state = load(engine.home)
        if state is not None and state.provider != engine.provider:
            raise UsageError(f"the cluster in {engine.home} runs the {state.provider} engine; "
                             "`cardmint cluster down --purge` first")
        cleaned = False
        if state is not None and state.status == READY:
            others = len(state.nodes) - 1  # replicas, and a fenced former primary
            if replicas is not None and replicas != others:
                raise UsageError(f"the cluster in {engine.home} has {others} replica(s), not "
                                 f"{replicas}; run `cardmint cluster down --purge` first to "
                                 "make a new one")
            if sync is not None and sync != state.sync:
                raise UsageError(f"the cluster in {engine.home} was made with sync="
                                 f"{state.sync}; run `cardmint cluster down --purge` first to "
                                 "change it")
            report = await engine._adopt(state, replicas, sync)
        else:
            if state is not None or (engine.home / "nodes").exists():
                await engine._clean(state)
                cleaned = True
            report = await engine._create(1 if replicas is None else replicas, bool(sync))
        report.cleaned = cleaned
    report.duration_s = round(time.monotonic() - began, 3)
    return report


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (the OS picks them; held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def make_template(pg: pgbin.PgBin, user: process.OsUser, template: Path) -> None:
    """A template data directory: initdb once, then every cluster copies it."""
    staging = template.with_name(template.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    nodes.initdb(pg, user, staging, roles.new_password(), sync=False)
    staging.rename(template)


def _is_postgres(pid: int) -> bool:
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
