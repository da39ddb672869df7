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

import os
import shutil
import signal
import time
from pathlib import Path

from cardmint import secretfile
from cardmint.cluster.patroni import conf
from cardmint.cluster.pg import nodes, pgbin, process, roles
from cardmint.cluster.state import APP, MONITOR, OWNER, READONLY, SUPERUSER
from cardmint.config import Settings
from cardmint.errors import ClusterError, UsageError
from cardmint.ops.lab import net
from cardmint.ops.lab.net import Host
from cardmint.ops.lab.observe import current_leader, wait_etcd, wait_leader, wait_members
from cardmint.ops.lab.procs import (
    member_config,
    reap,
    start_etcd,
    start_patroni,
    stop_etcd,
    stop_patroni,
)
from cardmint.ops.lab.state import (
    DATABASE,
    ENV_FILE,
    PG_PORT,
    REST_SECRET,
    SECRETS,
    Lab,
    LabHost,
    load,
    quote,
    save,
)


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


def write_env(lab: Lab) -> Path:
    """`lab.env` (mode 0600): the README's step 5 for this lab, the DSNs CardMint's
    commands take (`set -a; . lab.env; set +a`, then `cardmint health` and the rest)."""
    hosts = lab.hosts
    per_host = [f"postgresql://{{role}}:{{pw}}@{h.address}:{PG_PORT}/{DATABASE}" for h in hosts]
    pw = lab.passwords()

    def each(role: str) -> str:
        return ",".join(d.format(role=role, pw=quote(pw[role])) for d in per_host)

    secretfile.write(lab.path / ENV_FILE, {
        "CARDMINT_DATABASE_URL": lab.dsn(APP),
        "CARDMINT_MIGRATION_URL": lab.dsn(OWNER),
        "CARDMINT_ADMIN_URL": lab.dsn(SUPERUSER),
        "CARDMINT_READONLY_URL": lab.dsn(READONLY).replace("read-write", "any"),
        "CARDMINT_REPLICA_URLS": each(READONLY),
        "CARDMINT_MONITOR_URLS": each(MONITOR),
    })
    return lab.path / ENV_FILE
