"""`cardmint lab up --hosts 3` / `lab down`: the README's three-host Patroni recipe, run on
this machine in network namespaces (see net.py), so the runbook's failures can be
rehearsed before production.

Each host runs, as the PostgreSQL OS user and inside its namespace: an etcd member (the
three form one DCS), Patroni, and the PostgreSQL Patroni starts. The PostgreSQL settings,
HBA, roles and Patroni timings are the Patroni engine's (`cluster.patroni.conf`), with
the lab's differences:

- addresses: each host listens on its own bridge address only (etcd 2379/2380, Patroni's
  REST API 8008, PostgreSQL 5432), plus a unix socket in `hosts/hN/socket` through which
  the lab's observers reach a member even while its host is partitioned (as a program on
  that host would);
- HBA: SCRAM over plain TCP from 10.231.0.0/16 (a lab has no certificates: production
  keeps `hostssl`, README "Across three hosts");
- `failsafe_mode`: with the DCS lost (etcd quorum gone) the leader stays primary only
  while every member's REST API confirms it; otherwise it demotes;
- replicas fetch WAL from the shared archive (`restore_command`), so pg_rewind and
  recovery find segments the new leader has already recycled (issue 18 item 4).

Everything is found again from `lab.json` and the processes' command lines and stopped by
PID; the namespaces go by name. `sweep()` removes whatever a killed run left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from cardmint import secretfile
from cardmint.cluster.patroni import conf, proc
from cardmint.cluster.pg import nodes, pgbin, process, roles
from cardmint.cluster.state import APP, MONITOR, OWNER, READONLY, REPLICATION, SUPERUSER
from cardmint.config import Settings
from cardmint.errors import ClusterError, UsageError
from cardmint.ops.lab import net
from cardmint.ops.lab.net import Host

DATABASE = "cardmint"
PG_PORT, REST_PORT, ETCD_CLIENT, ETCD_PEER = 5432, 8008, 2379, 2380
STATE = "lab.json"
SECRETS = "secrets.env"
REST_SECRET = conf.REST_SECRET
UP_TIMEOUT_S = 120.0
POLL_S = 0.05


@dataclass
class LabHost:
    """One host of a lab, as lab.json keeps it."""

    name: str
    index: int
    netns: str
    address: str
    datadir: str
    socket_dir: str
    config: str
    etcd_dir: str

    @property
    def host(self) -> Host:
        return Host(self.index)

    @property
    def rest(self) -> str:
        return f"http://{self.address}:{REST_PORT}"


@dataclass
class Lab:
    """A lab's home and hosts; `up` makes one, `load` finds it again."""

    home: str
    sync: bool
    hosts: list[LabHost] = field(default_factory=list)
    bindir: str = ""
    created_at: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.home)

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise UsageError(f"no lab host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")

    def passwords(self) -> dict[str, str]:
        return secretfile.read(self.path / SECRETS)

    def rest_auth(self) -> tuple[str, str]:
        return conf.REST_USER, self.passwords().get(REST_SECRET, "")

    def log(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"

    def patroni_log(self, host: LabHost) -> Path:
        return self.path / "logs" / f"patroni-{host.name}" / "patroni.log"

    def dsn(self, role: str = APP, database: str = DATABASE) -> str:
        """Multi-host, read-write: what the application is given (README's step 5)."""
        hosts = ",".join(f"{h.address}:{PG_PORT}" for h in self.hosts)
        password = self.passwords()[role]
        return (f"postgresql://{role}:{_quote(password)}@{hosts}/{database}"
                "?target_session_attrs=read-write")

    async def connect(self, host: LabHost, *, database: str = "postgres",
                      timeout: float = 2.0) -> asyncpg.Connection:
        """The superuser on `host`'s member through its unix socket (works while the
        host is partitioned)."""
        return await asyncpg.connect(host=host.socket_dir, port=PG_PORT, user=SUPERUSER,
                                     password=self.passwords()[SUPERUSER], database=database,
                                     timeout=timeout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def load(home: Path) -> Lab | None:
    try:
        data = json.loads((home / STATE).read_text())
    except FileNotFoundError:
        return None
    hosts = [LabHost(**h) for h in data.pop("hosts")]
    return Lab(hosts=hosts, **data)


def save(lab: Lab) -> None:
    tmp = lab.path / (STATE + ".tmp")
    tmp.write_text(json.dumps(lab.to_dict(), indent=2) + "\n")
    tmp.replace(lab.path / STATE)


# -- processes ---------------------------------------------------------------------


def spawn(host: Host, user: process.OsUser, argv: list[str], log: Path) -> int:
    """Start `argv` in `host`'s namespace as `user`, output to `log`; its PID (`ip netns
    exec` and setpriv exec the program in place, so the PID is the program's)."""
    drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"] \
        if user.switching else []
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(host.run([*drop, *argv]), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 cwd="/")
    _children.append(child)
    return child.pid


_children: list[subprocess.Popen[bytes]] = []  # polled so that none lingers as a zombie


def reap() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def etcd_argv(etcd: str, lab: Lab, host: LabHost, *, new: bool) -> list[str]:
    client = f"http://{host.address}:{ETCD_CLIENT}"
    peer = f"http://{host.address}:{ETCD_PEER}"
    cluster = ",".join(f"{h.name}=http://{h.address}:{ETCD_PEER}" for h in lab.hosts)
    return [etcd, "--name", host.name, "--data-dir", host.etcd_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new" if new else "existing",
            "--initial-cluster-token", "cmlab", "--logger", "zap", "--log-outputs", "stderr"]


def start_etcd(lab: Lab, host: LabHost, user: process.OsUser, etcd: str) -> bool:
    if proc.find(Path(host.etcd_dir)) is not None:
        return False
    spawn(host.host, user, etcd_argv(etcd, lab, host, new=True), lab.log(f"etcd-{host.name}"))
    return True


def start_patroni(lab: Lab, host: LabHost, user: process.OsUser, patroni: Path) -> bool:
    if proc.find(Path(host.config)) is not None:
        return False
    spawn(host.host, user, [str(patroni), host.config], lab.log(host.name))
    return True


async def stop_patroni(host: LabHost) -> None:
    """SIGTERM to the host's Patroni (it stops its PostgreSQL first), then any postmaster
    or backend left in the data directory, by PID."""
    pid = proc.find(Path(host.config))
    if pid is not None:
        await proc.terminate(pid)
    postmaster = process.postmaster_pid(Path(host.datadir))
    if postmaster is not None:
        await process.stop(postmaster)
    await process.kill_leftovers(Path(host.datadir))
    reap()


async def stop_etcd(host: LabHost) -> None:
    pid = proc.find(Path(host.etcd_dir))
    if pid is not None:
        await proc.terminate(pid)
    reap()


# -- configuration -----------------------------------------------------------------


def member_config(lab: Lab, host: LabHost, passwords: dict[str, str]) -> dict[str, Any]:
    """The Patroni engine's member file with the lab's differences (module docstring)."""
    archive = lab.path / "wal-archive"
    cfg = conf.member_config(
        name=host.name, datadir=Path(host.datadir), bindir=Path(lab.bindir), pg_port=PG_PORT,
        rest_port=REST_PORT, etcd_hosts=[f"{h.address}:{ETCD_CLIENT}" for h in lab.hosts],
        passwords=passwords, rest_password=passwords[REST_SECRET],
        pgpass=lab.path / "hosts" / host.name / "pgpass",
        log_dir=lab.patroni_log(host).parent, archive=archive, sync=lab.sync, strict=False,
        host=host.address)
    cfg["bootstrap"]["dcs"]["failsafe_mode"] = True
    pg = cfg["postgresql"]
    pg["parameters"]["unix_socket_directories"] = host.socket_dir
    pg["pg_hba"] = [
        "local all all scram-sha-256",
        f"host all all {net.NETWORK}.0/24 scram-sha-256",
        f"host replication {REPLICATION} {net.NETWORK}.0/24 scram-sha-256",
        *pg["pg_hba"]]
    pg["recovery_conf"] = {"restore_command": nodes.restore_command(archive)}
    return cfg


# -- up / down ---------------------------------------------------------------------


async def up(settings: Settings, home: Path, *, count: int = 3, sync: bool = True) -> Lab:
    """Make the network, start etcd everywhere, Patroni on the first host (it bootstraps
    the cluster), then the others (base backups), create the roles; a failure tears
    everything down again."""
    if os.geteuid() != 0:
        raise UsageError("the lab makes network namespaces: run it as root")
    if load(home) is not None:
        raise UsageError(f"a lab is up in {home}: `cardmint lab down` first")
    user = process.OsUser.resolve(settings.pg_os_user)
    pg = pgbin.find(settings.pg_bindir)
    patroni = settings.patroni_bin / "patroni"
    etcd = shutil.which(settings.etcd)
    if not patroni.is_file() or etcd is None:
        raise ClusterError("the lab needs Patroni and etcd: run `make patroni`")
    user.check_reachable(patroni)
    if net.namespaces() or net.links():  # another lab's: refused before we own anything
        raise UsageError("a lab's network (cmlab-*) exists already: `cardmint lab down` "
                         "first (it removes every cmlab-* namespace)")
    lab = _new(home, user, net.hosts(count), sync=sync, bindir=str(pg.bindir))
    try:
        net.create([h.host for h in lab.hosts])
        _layout(lab, user)
        for host in lab.hosts:
            start_etcd(lab, host, user, etcd)
        await wait_etcd(lab)
        start_patroni(lab, lab.hosts[0], user, patroni)
        await wait_leader(lab, lab.hosts[0].name)
        for host in lab.hosts[1:]:
            start_patroni(lab, host, user, patroni)
        await wait_members(lab)
        await _roles(lab, lab.passwords())
        write_env(lab)
    except BaseException:
        await down(home)
        raise
    return lab


def _new(home: Path, user: process.OsUser, lab_hosts: list[Host], *, sync: bool,
         bindir: str) -> Lab:
    """lab.json and the secrets file of a new lab in `home`."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    user.check_reachable(home)
    lab = Lab(home=str(home.resolve()), sync=sync, bindir=bindir, created_at=time.time())
    for h in lab_hosts:
        base = lab.path / "hosts" / h.name
        lab.hosts.append(LabHost(
            name=h.name, index=h.index, netns=h.netns, address=h.address,
            datadir=str(base / "data"), socket_dir=str(base / "socket"),
            config=str(base / "patroni.yml"), etcd_dir=str(base / "etcd")))
    secretfile.write(lab.path / SECRETS,
                     {**roles.new_passwords(), REST_SECRET: roles.new_password()})
    save(lab)
    return lab


def _layout(lab: Lab, user: process.OsUser) -> None:
    """Directories the server user owns, and each host's Patroni file (mode 0600)."""
    passwords = lab.passwords()
    user.own(lab.path / "wal-archive")
    user.own(lab.path / "logs", 0o755)
    for host in lab.hosts:
        user.own(Path(host.datadir).parent, 0o755)
        user.own(Path(host.socket_dir), 0o755)
        user.own(Path(host.etcd_dir))
        user.own(lab.patroni_log(host).parent, 0o755)
        nodes.write(user, Path(host.config),
                    conf.render(member_config(lab, host, passwords)), 0o600)


async def _roles(lab: Lab, passwords: dict[str, str]) -> None:
    leader = await current_leader(lab)
    conn = await lab.connect(lab.host(leader))
    try:
        for statement in conf.bootstrap_sql(roles.cluster_sql(passwords, DATABASE)):
            await conn.execute(statement)
    finally:
        await conn.close()
    conn = await lab.connect(lab.host(leader), database=DATABASE)
    try:
        for statement in roles.database_sql():
            await conn.execute(statement)
    finally:
        await conn.close()


async def down(home: Path, *, purge: bool = True) -> list[str]:
    """Stop every process by PID (Patroni, PostgreSQL, etcd), then anything else still in
    a lab namespace, then remove the namespaces and links by name; with `purge`, the
    lab's directory too. Works on a half-made lab and with no lab.json (sweep)."""
    lab = load(home)
    stopped: list[str] = []
    if lab is not None:
        try:
            leader = await current_leader(lab)
        except ClusterError:
            leader = None
        # the replicas first, the leader last: none of them takes over on the way
        for host in sorted(lab.hosts, key=lambda h: h.name == leader):
            await stop_patroni(host)
            stopped.append(f"patroni-{host.name}")
        for host in lab.hosts:
            await stop_etcd(host)
            stopped.append(f"etcd-{host.name}")
    stopped += sweep()
    if purge:
        shutil.rmtree(home, ignore_errors=True)
    return stopped


def sweep() -> list[str]:
    """Whatever runs in a lab namespace is SIGKILLed by PID, then every `cmlab-*`
    namespace and interface is deleted by name: what a killed run left behind."""
    for name in net.namespaces():
        for pid in net.pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    reap()
    return net.remove()


# -- waiting -----------------------------------------------------------------------


async def rest_get(host: LabHost, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """A member's REST answer (503 bodies included), or None if it does not answer."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            body = (await client.get(host.rest + path)).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"lab: {what} not within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def wait_etcd(lab: Lab, timeout: float = 60.0) -> None:
    async def healthy() -> bool:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for h in lab.hosts:
                try:
                    r = await client.get(f"http://{h.address}:{ETCD_CLIENT}/health")
                    if r.json().get("health") != "true":
                        return False
                except (httpx.HTTPError, ValueError):
                    return False
        return True

    await _until("etcd healthy on every host", healthy, timeout)


async def wait_leader(lab: Lab, name: str, timeout: float = UP_TIMEOUT_S) -> None:
    async def leads() -> bool:
        me = await rest_get(lab.host(name), "/patroni")
        return bool(me and me.get("role") in ("primary", "master") and
                    me.get("state") == "running")

    await _until(f"{name} leading", leads, timeout)


async def members(lab: Lab, via: LabHost | None = None) -> dict[str, dict[str, Any]]:
    """`GET /cluster` from `via` (else the first host that answers): members by name."""
    for host in [via] if via else lab.hosts:
        body = await rest_get(host, "/cluster")
        if body is not None:
            return {m["name"]: m for m in body.get("members") or []}
    return {}


async def current_leader(lab: Lab, via: LabHost | None = None) -> str:
    found = await members(lab, via)
    for name, m in found.items():
        if m.get("role") == "leader" and m.get("state") == "running":
            return name
    raise ClusterError(f"lab: no running leader ({found})")


async def wait_members(lab: Lab, timeout: float = UP_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Until every host's REST API tells the same story: one leader running, every other
    member streaming (with sync: one of them the synchronous standby). Every host is
    asked: a host just back from a partition may still answer from its own old view."""
    async def whole() -> dict[str, dict[str, Any]] | None:
        views = [await members(lab, h) for h in lab.hosts]
        leaders = {n for v in views for n, m in v.items() if m.get("role") == "leader"
                   and m.get("state") == "running"}
        if len(leaders) != 1:
            return None
        for found in views:
            others = [found.get(h.name) for h in lab.hosts if h.name not in leaders]
            if not all(m and m.get("state") == "streaming" for m in others):
                return None
            if lab.sync and not any(m.get("role") == "sync_standby" for m in found.values()):
                return None
        return views[0]

    found: dict[str, dict[str, Any]] = await _until("every member streaming", whole, timeout)
    return found


ENV_FILE = "lab.env"


def write_env(lab: Lab) -> Path:
    """`lab.env` (mode 0600): the README's step 5 for this lab, the DSNs CardMint's
    commands take (`set -a; . lab.env; set +a`, then `cardmint health` and the rest)."""
    hosts = lab.hosts
    per_host = [f"postgresql://{{role}}:{{pw}}@{h.address}:{PG_PORT}/{DATABASE}" for h in hosts]
    pw = lab.passwords()

    def each(role: str) -> str:
        return ",".join(d.format(role=role, pw=_quote(pw[role])) for d in per_host)

    secretfile.write(lab.path / ENV_FILE, {
        "CARDMINT_DATABASE_URL": lab.dsn(APP),
        "CARDMINT_MIGRATION_URL": lab.dsn(OWNER),
        "CARDMINT_ADMIN_URL": lab.dsn(SUPERUSER),
        "CARDMINT_READONLY_URL": lab.dsn(READONLY).replace("read-write", "any"),
        "CARDMINT_REPLICA_URLS": each(READONLY),
        "CARDMINT_MONITOR_URLS": each(MONITOR),
    })
    return lab.path / ENV_FILE


async def status(lab: Lab) -> dict[str, Any]:
    """Each host as it answers for itself (REST), whether its link is cut, and the
    cluster as each host's REST API sees it."""
    hosts = []
    for h in lab.hosts:
        me = await rest_get(h, "/patroni")
        hosts.append({"name": h.name, "address": h.address, "cut": net.is_cut(h.host),
                      "role": me.get("role") if me else None,
                      "state": me.get("state") if me else None,
                      "timeline": me.get("timeline") if me else None,
                      "patroni_pid": proc.find(Path(h.config)),
                      "etcd_pid": proc.find(Path(h.etcd_dir))})
    return {"home": lab.home, "sync": lab.sync, "hosts": hosts,
            "env_file": str(lab.path / ENV_FILE)}


def summary(lab: Lab) -> dict[str, Any]:
    """What `lab up` prints: hosts, where to reach them, and the DSNs by role (redacted
    by the caller before printing)."""
    return {"home": lab.home, "sync": lab.sync,
            "hosts": [{"name": h.name, "netns": h.netns, "address": h.address,
                       "postgres": f"{h.address}:{PG_PORT}", "rest": h.rest,
                       "etcd": f"http://{h.address}:{ETCD_CLIENT}"} for h in lab.hosts],
            "roles": [OWNER, APP, READONLY, MONITOR]}
