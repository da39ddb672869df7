"""The Patroni engine: the same PostgreSQL nodes as the local engine, run by Patroni,
which fails over by itself when the leader is lost, with one etcd on loopback as its DCS.

CardMint starts etcd and one Patroni per member as the PostgreSQL OS user, hands Patroni
the local engine's settings, HBA and roles (`patroni_conf`), and then only asks: status
through `GET /cluster` plus each node's own word, failover and switchover through
`POST /failover` and `/switchover`, rejoin by starting the member's Patroni again (it
rewinds by itself) or, when that does not bring it back, `POST /reinitialize`. Every
process is found by its command line and stopped by PID. cluster.json keeps the roles
as Patroni last reported them, so that the DSNs list the leader first (the application's
primary DSN is multi-host with target_session_attrs=read-write and finds the leader
whatever the order).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from cardmint import secretfile
from cardmint.cluster.engine import (
    ClusterStatus,
    DownReport,
    FailoverReport,
    LogQuery,
    LogReport,
    RejoinReport,
    ReplicaReport,
    Report,
    Stopped,
    UpReport,
)
from cardmint.cluster.home import create_or_adopt, free_ports, locked, locked_if_free, new_home
from cardmint.cluster.home import purge as purge_home
from cardmint.cluster.patroni import conf, ha, proc, rest
from cardmint.cluster.pg import backrest, logs, nodes, pgbin, process, roles, tls
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
from cardmint.dsn import redact
from cardmint.errors import ClusterError, UsageError

_MANAGED = ("{what} is for the local engine; this cluster runs patroni: Patroni manages its "
            "nodes: change its configuration (`patronictl edit-config`)")
BOOTSTRAP_TIMEOUT_S = 90.0  # the first member: initdb, start, leader key
MEMBERS_TIMEOUT_S = 120.0  # every member streaming (replicas: a base backup each)
POLL_S = 0.05
RECONNECT_TIMEOUT_S = 60.0  # a replica logging in again after a credentials reload


class PatroniCluster:
    """A Patroni cluster under `settings.home`, with the same operations and reports as
    every engine."""

    provider = "patroni"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.admin = NodeAdmin(settings)

    # -- paths, secrets, state, lock -----------------------------------------------

    @property
    def archive(self) -> Path:
        """pgBackRest's directory (its configuration, spool, locks and log)."""
        return self.home / "pgbackrest"

    @contextmanager
    def lock(self) -> Iterator[None]:
        with locked(self.home):
            yield

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def patroni_log(self, name: str) -> Path:
        """Patroni's own log (its stdout, `log(name)`, has PostgreSQL's start-up lines)."""
        return self.home / "logs" / f"patroni-{name}" / "patroni.log"

    def tail(self, name: str, lines: int = 15) -> str:
        return f"{process.tail(self.patroni_log(name), lines)}\n{process.tail(self.log(name), 5)}"

    def config_path(self, name: str) -> Path:
        return self.home / "patroni" / f"{name}.yml"

    def passwords(self) -> dict[str, str]:
        return self.admin.passwords()

    def rest_auth(self) -> tuple[str, str]:
        return conf.REST_USER, secretfile.read(self.settings.secrets_path).get(conf.REST_SECRET, "")

    def state(self) -> ClusterState | None:
        return load(self.home)

    def rest_port(self, state: ClusterState, name: str) -> int:
        return int(state.patroni["members"][name]["rest_port"])  # type: ignore[index]

    def patroni_pid(self, name: str) -> int | None:
        """The PID of the member's Patroni, if it runs."""
        return proc.find(self.config_path(name))

    # -- up ------------------------------------------------------------------------

    async def up(self, replicas: int | None = None, sync: bool | None = None) -> UpReport:
        """Create the cluster, or adopt the one here, starting whatever is stopped."""
        if replicas == 0 and sync and self.settings.sync_strict:
            raise UsageError("strict synchronous replication without a replica would make "
                             "every commit wait forever")
        return await create_or_adopt(self, replicas, sync)

    def programs(self, user: process.OsUser) -> tuple[Path, str]:
        patroni = self.settings.patroni_bin / "patroni"
        if not patroni.is_file():
            raise ClusterError(f"Patroni is not installed in {self.settings.patroni_bin}: run "
                               "`make patroni` (or set CARDMINT_PATRONI_BIN)")
        user.check_reachable(patroni)  # it runs as the PostgreSQL OS user
        etcd = shutil.which(self.settings.etcd)
        if etcd is None:
            raise ClusterError(f"etcd ({self.settings.etcd}) is not installed: run `make "
                               "patroni` (Debian: apt-get install etcd-server)")
        return patroni, etcd

    async def create(self, replicas: int, sync: bool) -> UpReport:
        s = self.settings
        user = process.OsUser.resolve(s.pg_os_user)
        pg = pgbin.find(s.pg_bindir)
        patroni, etcd = self.programs(user)
        passwords = new_home(s, self.home, user, **{conf.REST_SECRET: roles.new_password()})
        names = [f"node{i + 1}" for i in range(replicas + 1)]
        ports = free_ports(2 * len(names) + 2)
        state = ClusterState(
            home=str(self.home), bindir=str(pg.bindir), pg_version=pg.version,
            os_user=user.name, provider=self.provider, sync=sync,
            nodes=[Node(name=n, role="primary" if i == 0 else "replica", port=ports[i],
                        datadir=str(self.home / "nodes" / n)) for i, n in enumerate(names)],
            patroni={
                "scope": conf.SCOPE, "bin": str(patroni.parent), "ttl_s": conf.TTL_S,
                "dcs": {"kind": "etcd3", "client_port": ports[-2], "peer_port": ports[-1],
                        "datadir": str(self.home / "etcd"), "pid": None},
                "members": {n: {"rest_port": ports[len(names) + i], "pid": None,
                                "config": str(self.config_path(n))}
                            for i, n in enumerate(names)},
            },
        )
        save(state)  # status "creating": a killed `up` is recognised and cleaned next time
        user.own(self.home / "nodes", 0o755)  # Patroni makes the data directories in it
        (self.home / "logs").mkdir(exist_ok=True)
        user.own(self.archive)
        user.own(self.home / "patroni")
        user.own(self.home / "etcd")
        await asyncio.to_thread(tls.ensure, self.home / "tls", user, cert=s.tls_cert_file,
                                key=s.tls_key_file, ca=s.tls_ca_file)
        first_node = state.nodes[0]
        backrest.prepare(self.home, s.secrets_path, user,
                         backrest.Pg(first_node.datadir, first_node.port), new=True)
        self._write_configs(user, state, passwords)
        try:
            await self._start_etcd(user, state, etcd)
            first = state.nodes[0]
            self.start_member(user, state, first.name, patroni)
            await self._wait_leader(state, first.name)
            for node in state.nodes[1:]:
                self.start_member(user, state, node.name, patroni)
            await self.wait_members(state, sync=sync)
            # after the standby streams: with strict synchronous mode commits wait for it
            await self.admin.execute(
                state.primary,
                *conf.bootstrap_sql(roles.cluster_sql(passwords, state.database)),
                password=passwords[SUPERUSER])
            await self.admin.execute(state.primary, *roles.database_sql(),
                                     database=state.database, password=passwords[SUPERUSER])
            await asyncio.to_thread(backrest.stanza_create, self.home, user,
                                    passwords[SUPERUSER])
        except BaseException:
            await self._stop_all(state)  # a failed `up` leaves nothing running
            raise
        self.record_pids(state)
        state.status = READY
        save(state)
        return UpReport(created=True, adopted=False, started=["etcd", *names])

    def _write_configs(self, user: process.OsUser, state: ClusterState,
                       passwords: dict[str, str]) -> None:
        dcs = state.patroni["dcs"]  # type: ignore[index]
        rest_password = self.rest_auth()[1]
        for node in state.nodes:
            user.own(self.patroni_log(node.name).parent, 0o755)
            member = conf.member_config(
                name=node.name, datadir=Path(node.datadir), bindir=Path(state.bindir),
                pg_port=node.port, rest_port=self.rest_port(state, node.name),
                etcd_hosts=[f"{conf.HOST}:{dcs['client_port']}"], passwords=passwords,
                rest_password=rest_password, pgpass=self.home / "patroni" / f"{node.name}.pgpass",
                log_dir=self.patroni_log(node.name).parent,
                archive=self.archive, sync=state.sync, strict=self.settings.sync_strict)
            nodes.write(user, self.config_path(node.name), conf.render(member), 0o600)

    async def reload_credentials(self) -> list[str]:
        """After `security rotate` changed the superuser's or the replication role's
        password: every member's configuration gets the secrets file's passwords, Patroni
        reloads it (it keeps primary_conninfo and its pgpass itself), and the replicas'
        replication connections are ended on the leader, so that each proves the new
        password by reconnecting. Returns the members that streamed again."""
        state = self.ready_state()
        user = process.OsUser.resolve(self.settings.pg_os_user)
        self._write_configs(user, state, self.passwords())
        for node in state.nodes:
            code, text = await rest.post(self.rest_port(state, node.name), "/reload", {},
                                         self.rest_auth())
            if code >= 400:
                raise ClusterError(f"Patroni on {node.name} refused to reload: {code} "
                                   f"{redact(text)[:200]}")
        found = await self.wait_members(state, sync=False)
        lead = rest.leader(found)
        replicas = [n for n in found if n != lead]
        if lead is None or not replicas:
            return []
        conn = await self.admin.connect(state.node(lead), "postgres")
        try:
            # Patroni applies the reload in its next loop and writes the new pgpass; a
            # replica whose WAL sender ends logs in again, and retries until that is done
            await _until_replicas_reconnect(conn, replicas)
        finally:
            await conn.close()
        await self.wait_members(state, sync=state.sync)
        return replicas

    async def _start_etcd(self, user: process.OsUser, state: ClusterState, etcd: str) -> bool:
        dcs = state.patroni["dcs"]  # type: ignore[index]
        datadir = Path(dcs["datadir"])
        if proc.find(datadir) is not None:
            return False
        log = self.log("etcd")
        pid = user.spawn(conf.etcd_argv(etcd, datadir, dcs["client_port"], dcs["peer_port"]), log)
        dcs["pid"] = pid
        await proc.wait_etcd(pid, dcs["client_port"], log)
        return True

    def start_member(self, user: process.OsUser, state: ClusterState, name: str,
                      patroni: Path) -> bool:
        config = self.config_path(name)
        if proc.find(config) is not None:
            return False
        pid = user.spawn([str(patroni), str(config)], self.log(name))
        state.patroni["members"][name]["pid"] = pid  # type: ignore[index]
        return True

    async def _wait_leader(self, state: ClusterState, name: str,
                           timeout: float = BOOTSTRAP_TIMEOUT_S) -> None:
        """Until `name` runs as the leader (its bootstrap: initdb, start, the leader key)."""
        deadline = time.monotonic() + timeout
        port = self.rest_port(state, name)
        while True:
            if self.patroni_pid(name) is None:
                raise ClusterError(f"Patroni of {name} exited: {self.tail(name)}")
            try:
                me = await rest.get(port, "/patroni")
                if me.get("role") in rest.PRIMARY_ROLES and me.get("state") == "running":
                    return
            except ClusterError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} is not the leader after {timeout:.0f} s: "
                                   f"{self.tail(name)}")
            await asyncio.sleep(POLL_S)

    async def wait_members(self, state: ClusterState, *, sync: bool,
                            timeout: float = MEMBERS_TIMEOUT_S,
                            only: list[str] | None = None) -> dict[str, rest.Member]:
        """Until there is a leader and every other member (or those named in `only`) streams
        from it; with `sync`, until Patroni has one of them recorded as the synchronous
        standby in the DCS: before that, Patroni promotes no replica when the leader dies
        (it cannot know that one holds every acknowledged commit)."""
        deadline = time.monotonic() + timeout
        found: dict[str, rest.Member] = {}
        while True:
            try:
                found = await self.members_of(state)
            except ClusterError:
                found = {}
            lead = rest.leader(found)
            others = [found.get(n.name) for n in state.nodes
                      if n.name != lead and (only is None or n.name in only)]
            ok = lead is not None and all(m is not None and m.state == "streaming"
                                          for m in others)
            if ok and sync and others:
                ok = any(m.role == "sync_standby" and m.state == "streaming"
                         for m in found.values())
            if ok:
                return found
            if time.monotonic() > deadline:
                seen = {m.name: f"{m.role}/{m.state}" for m in found.values()}
                raise ClusterError(f"Patroni members not all streaming after {timeout:.0f} s: "
                                   f"{seen or 'no member answers'}")
            await asyncio.sleep(POLL_S)

    async def adopt(self, state: ClusterState, replicas: int | None,
                     sync: bool | None) -> UpReport:
        user = process.OsUser.resolve(self.settings.pg_os_user)
        patroni, etcd = self.programs(user)
        started = ["etcd"] if await self._start_etcd(user, state, etcd) else []
        for node in state.nodes:
            if self.start_member(user, state, node.name, patroni):
                started.append(node.name)
        if started:
            await self.wait_members(state, sync=state.sync)
        await self.refresh_roles(state)
        self.record_pids(state)
        save(state)
        return UpReport(created=False, adopted=True, started=started)

    # -- down ----------------------------------------------------------------------

    async def down(self, purge: bool = False) -> DownReport:
        """Stop every Patroni (replicas first, so the leader is not handed over), every
        PostgreSQL left behind and etcd, by PID; with `purge`, delete the cluster's files."""
        report = DownReport()
        with self.lock():
            state = load(self.home)
            if state is not None:
                await self._stop_all(state, report.stopped)
                await backrest.stop_async(self.home)
                if not purge:
                    save(state)
            if purge:
                report.kept = purge_home(self.home, ("nodes", "pgbackrest", "logs", "tls",
                                                     "patroni", "etcd"))
                report.purged = True
        return report

    async def _stop_all(self, state: ClusterState,
                        stopped: list[Stopped] | None = None) -> None:
        stopped = stopped if stopped is not None else []
        try:
            await self.refresh_roles(state)
        except ClusterError:
            pass  # no member answers: the roles as last saved
        for node in sorted(state.nodes, key=lambda n: n.role == "primary"):
            pid = self.patroni_pid(node.name)
            if pid is not None:
                stopped.append(Stopped(f"{node.name} patroni", pid, await proc.terminate(pid)))
            datadir = Path(node.datadir)
            pid = process.postmaster_pid(datadir)  # one whose Patroni was killed
            if pid is not None:
                stopped.append(Stopped(node.name, pid, await process.stop(pid)))
            await process.kill_leftovers(datadir)  # backends of a killed postmaster
            node.pid = None
            if state.patroni:
                state.patroni["members"][node.name]["pid"] = None
        if state.patroni:
            dcs = state.patroni["dcs"]
            pid = proc.find(Path(dcs["datadir"]))
            if pid is not None:
                stopped.append(Stopped("etcd", pid, await proc.terminate(pid)))
            dcs["pid"] = None

    async def clean(self, state: ClusterState | None) -> None:
        """Remove a half-created cluster, stopping whatever it left running (found by
        its files when cluster.json is gone too)."""
        if state is not None and state.provider == self.provider:
            await self._stop_all(state)
        for marker in [*sorted((self.home / "patroni").glob("*.yml")), self.home / "etcd"]:
            pid = proc.find(marker)
            if pid is not None:
                await proc.terminate(pid)
        for datadir in sorted((self.home / "nodes").glob("*")):
            pid = process.postmaster_pid(datadir)
            if pid is not None:
                await process.stop(pid)
            await process.kill_leftovers(datadir)
        for name in ("nodes", "pgbackrest", "patroni", "etcd"):
            shutil.rmtree(self.home / name, ignore_errors=True)

    # -- what Patroni says ---------------------------------------------------------

    async def members_of(self, state: ClusterState) -> dict[str, rest.Member]:
        """The members as the DCS lists them, from the first member that answers."""
        errors = []
        for node in state.nodes:
            try:
                return rest.members(await rest.get(self.rest_port(state, node.name),
                                                   "/cluster"))
            except ClusterError as exc:
                errors.append(str(exc))
        raise ClusterError("no Patroni member answers: " + "; ".join(errors))

    async def members(self) -> dict[str, rest.Member]:
        return await self.members_of(self.ready_state())

    async def refresh_roles(self, state: ClusterState) -> dict[str, rest.Member]:
        """Roles in `state` as Patroni has them: the leader is the primary; a member whose
        Patroni is gone is fenced (out of every DSN) until `cluster rejoin` starts it."""
        found = await self.members_of(state)
        lead = rest.leader(found)
        for node in state.nodes:
            if node.name == lead:
                node.role = "primary"
            elif node.name not in found or self.patroni_pid(node.name) is None:
                node.role = FENCED
            elif lead is not None:
                node.role = "replica"
        return found

    async def refresh(self) -> None:
        """cluster.json's roles as Patroni has them now (the DSNs follow)."""
        await self.refresh_members()

    async def refresh_members(self) -> dict[str, rest.Member]:
        """`refresh`, returning Patroni's members as it found them."""
        with self.lock():
            state = self.ready_state()
            found = await self.refresh_roles(state)
            self.record_pids(state)
            await asyncio.to_thread(save, state)
        return found

    def record_pids(self, state: ClusterState) -> None:
        for node in state.nodes:
            node.pid = process.postmaster_pid(Path(node.datadir))
            state.patroni["members"][node.name]["pid"] = self.patroni_pid(node.name)  # type: ignore[index]
        dcs = state.patroni["dcs"]  # type: ignore[index]
        dcs["pid"] = proc.find(Path(dcs["datadir"]))

    def _save_unless_busy(self, state: ClusterState) -> None:
        """Save the roles, unless another command holds the home's lock (it saves its own)."""
        with locked_if_free(self.home) as mine:
            if not mine:
                return
            current = load(self.home)
            if current is not None and current.status == READY:
                roles_now = {n.name: n.role for n in state.nodes}
                for node in current.nodes:
                    node.role = roles_now.get(node.name, node.role)
                save(current)

    def ready_state(self) -> ClusterState:
        state = load(self.home)
        if state is None:
            raise self.settings.no_cluster()
        if state.status != READY:
            raise ClusterError(f"the cluster in {self.home} is not ready: `cardmint cluster up "
                               "--engine patroni` was cut off; run it again")
        if state.provider != self.provider or not state.patroni:
            raise UsageError(f"the cluster in {self.home} runs the {state.provider} engine")
        return state

    # -- status --------------------------------------------------------------------

    async def status(self) -> ClusterStatus:
        """`cluster status --json`'s contract, each node as it reports itself, plus what
        Patroni says of it (`patroni`: its member role and state, lag, REST port, PID)."""
        state = load(self.home)
        if state is None:
            raise self.settings.no_cluster()
        before = [(n.name, n.role) for n in state.nodes]
        try:
            found = await self.refresh_roles(state)
            patroni_error = None
        except ClusterError as exc:
            found, patroni_error = {}, str(exc)
        if state.status == READY and [(n.name, n.role) for n in state.nodes] != before:
            self._save_unless_busy(state)  # Patroni failed over by itself: DSNs follow
        probes = await self.admin.probe_all(state)
        for probe in probes:
            member = found.get(probe.name)
            probe.extra["patroni"] = {
                "running": self.patroni_pid(probe.name) is not None,
                "pid": self.patroni_pid(probe.name),
                "rest_port": self.rest_port(state, probe.name),
                **(member.to_dict() if member else {"role": None, "state": None,
                                                     "timeline": None, "lag": None}),
            }
        dcs = state.patroni["dcs"] if state.patroni else {}
        return ClusterStatus(
            provider=self.provider, home=str(self.home), status=state.status, sync=state.sync,
            nodes=probes, extra={
                "leader": rest.leader(found), "patroni_error": patroni_error,
                "dcs": {"kind": dcs.get("kind"), "port": dcs.get("client_port"),
                        "running": bool(dcs) and proc.find(Path(dcs["datadir"])) is not None}})

    # -- failover, switchover, rejoin ------------------------------------------------

    async def failover(self, to: str | None = None) -> FailoverReport:
        """Patroni promotes `to` (or the replica holding the most WAL); a live old leader
        is demoted by Patroni and follows the new one by itself."""
        return await ha.handover(self, "failover", to)

    async def switchover(self, to: str | None = None) -> FailoverReport:
        """Planned: Patroni stops the leader cleanly, promotes the (synchronous) standby
        and restarts the old leader as its replica. Nothing acknowledged is lost."""
        return await ha.handover(self, "switchover", to)

    async def rejoin(self, name: str) -> RejoinReport:
        """The member's Patroni started again (a crashed old leader is rewound by Patroni
        itself); if it does not stream within a minute, Patroni reinitializes it from the
        leader (a fresh base backup)."""
        return await ha.rejoin(self, name)

    # -- connect -------------------------------------------------------------------

    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment for psql on a node (`primary`: Patroni's leader)."""
        node = await self.resolve(name)
        return self.admin.psql_command(self.ready_state(), node, args)

    async def resolve(self, name: str | None) -> Node:
        """A member by name, or by the role Patroni gives it now (`primary`, `replica`)."""
        report = await self.status()  # roles as Patroni has them now
        state = self.ready_state()
        wanted = name or "primary"
        if wanted not in ("primary", "replica"):
            try:
                return state.node(wanted)
            except LookupError as exc:
                raise UsageError(str(exc)) from None
        for probe in report.nodes:
            if probe.running and probe.role == wanted and probe.error is None:
                return state.node(probe.name)
        raise ClusterError(f"no running {wanted} in the cluster")

    # -- credentials (ops/security/rotate.py) --------------------------------------

    async def apply_password(self, role: str, password: str) -> None:
        """Nothing yet: Patroni reads the passwords from its configuration, written once
        the secrets file has them (`credentials_saved`)."""

    async def credentials_saved(self, role: str) -> str:
        if role not in (SUPERUSER, REPLICATION):
            return ""
        again = await self.reload_credentials()  # Patroni logs in with both
        return f"; Patroni reloaded, {len(again)} replica(s) logged in again"

    # -- what Patroni manages itself -------------------------------------------------

    async def add_replica(self, sync: bool = False) -> ReplicaReport:
        raise UsageError(_MANAGED.format(what="add-replica"))

    async def remove_replica(self, name: str) -> ReplicaReport:
        raise UsageError(_MANAGED.format(what="remove-replica"))

    async def resize(self, *, memory: str | None = None, cpu: int | None = None,
                     vm_size: str | None = None) -> Report:
        raise UsageError(_MANAGED.format(what="resize"))

    async def pooler(self, action: str) -> dict[str, Any]:
        raise UsageError(_MANAGED.format(what="pooler"))

    async def logs(self, query: LogQuery) -> LogReport:
        return logs.read(self.ready_state(), query)

    def follow_logs(self, query: LogQuery) -> AsyncIterator[dict[str, Any]]:
        return logs.follow_query(self.ready_state(), query)


async def _until_replicas_reconnect(conn: asyncpg.Connection, names: list[str],
                                    timeout: float = RECONNECT_TIMEOUT_S) -> None:
    """End the named replicas' WAL senders on the leader and wait until each streams
    again on a new one (its login with the current replication password)."""
    before = {r["application_name"]: r["pid"] for r in await conn.fetch(
        "SELECT application_name, pid FROM pg_stat_replication")}
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication "
                       "WHERE application_name = ANY($1::text[])", names)
    deadline = time.monotonic() + timeout
    while True:
        now = {r["application_name"]: r["pid"] for r in await conn.fetch(
            "SELECT application_name, pid FROM pg_stat_replication WHERE state = 'streaming'")}
        if all(n in now and now[n] != before.get(n) for n in names):
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"replicas {', '.join(n for n in names if n not in now)} did "
                               f"not log in again within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)
