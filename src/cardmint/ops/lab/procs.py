"""The lab's processes: etcd and Patroni started in a host's namespace as the
PostgreSQL OS user, found by their command line and stopped by PID; each host's Patroni
member file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from cardmint.cluster.patroni import conf, proc
from cardmint.cluster.pg import process
from cardmint.cluster.state import REPLICATION
from cardmint.ops.lab import net
from cardmint.ops.lab.net import Host
from cardmint.ops.lab.state import (
    ETCD_CLIENT,
    ETCD_PEER,
    PG_PORT,
    REST_PORT,
    REST_SECRET,
    Lab,
    LabHost,
)


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


def archive_command(archive: Path) -> str:
    """The lab's WAL archive: a directory every host's namespace sees (the hosts share
    this machine's file system), copy then rename, a segment sent again accepted only if
    identical. The lab rehearses failures of the network, not of backups: it has no
    pgBackRest repository host of its own."""
    return (f'if test -f "{archive}/%f"; then cmp -s "%p" "{archive}/%f"; '
            f'else cp "%p" "{archive}/%f.part" && mv "{archive}/%f.part" "{archive}/%f"; fi')


def restore_command(archive: Path) -> str:
    """Fetch a segment (or timeline history file) from the lab's archive; a missing one
    makes cp fail, which recovery takes as "not there"."""
    return f'cp "{archive}/%f" "%p"'


def member_config(lab: Lab, host: LabHost, passwords: dict[str, str]) -> dict[str, Any]:
    """The Patroni engine's member file with the lab's differences (lab.py's docstring)."""
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
    cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]["archive_command"] = \
        archive_command(archive)
    pg["recovery_conf"] = {"restore_command": restore_command(archive)}
    return cfg


