"""A pgBackRest repository on another host, made on this machine: a network namespace
`cmbr-<n>` on its own bridge (10.232.<n>.0/24), running `pgbackrest server` with TLS
certificates from the cluster's CA, reached only at its bridge address.

pgBackRest runs a backup into a remote repository on the repository host itself, which
reads the database through a `pgbackrest server` on the database host: that one listens
on the bridge's address on this side (10.232.<n>.1), for the repository host's
certificate only. Backups and expiry for the repository therefore run in the namespace
(`host_argv`); archive-push, archive-get, info, verify and restore reach it from here.

Its files (repository, configuration, certificates, log) live under a directory that
stands for the other host's disk: nothing of it is in `$CARDMINT_HOME`, so the loss of
the database host leaves it whole. Everything is stopped by PID and torn down by name
(`stop`); `sweep` removes what a killed session left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cardmint import inputs
from cardmint.cluster.pg import backrest, process, tls
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import SUPERUSER
from cardmint.errors import ClusterError

PREFIX = "cmbr-"
SUBNET = "10.232"
PORT = 8432
DB_PORT = 8433
CLIENT_CN = "cardmint-backup"
HOST_CN = "cardmint-repohost"
STATE = "host.json"
READY_TIMEOUT_S = 20.0


@dataclass
class RepoHost:
    n: int
    root: str
    pid: int | None = None
    db_pid: int | None = None  # the database host's server, for this host's backups
    home: str = ""

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.n}"

    @property
    def bridge(self) -> str:
        return f"{PREFIX}b{self.n}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}h{self.n}"

    @property
    def peer(self) -> str:
        return f"{PREFIX}p{self.n}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.n}.2"

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{self.n}.1"

    @property
    def repo_path(self) -> str:
        return str(Path(self.root) / "repo")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {done.stderr.strip()[-300:]}")
    return done


def namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(PREFIX)]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    return [n for n in names if n.startswith(PREFIX)]


def _free_n() -> int:
    taken = set(namespaces()) | set(_links())
    for n in range(1, 250):
        if not {f"{PREFIX}{n}", f"{PREFIX}b{n}", f"{PREFIX}h{n}"} & taken:
            return n
    raise ClusterError("no free 10.232.<n>.0/24 network for a repository host")


def _server_conf(host: RepoHost, certs: Path, cipher_pass: str) -> str:
    root = Path(host.root)
    return "\n".join([
        "# The repository host's pgBackRest (written by cardmint); holds the cipher key.",
        "[global]",
        f"tls-server-address={host.address}",
        f"tls-server-port={PORT}",
        f"tls-server-cert-file={certs / 'server.crt'}",
        f"tls-server-key-file={certs / 'server.key'}",
        f"tls-server-ca-file={certs / 'ca.crt'}",
        f"tls-server-auth={CLIENT_CN}={backrest.STANZA}",
        f"repo1-path={host.repo_path}",
        f"repo1-cipher-type={backrest.CIPHER_TYPE}",
        f"repo1-cipher-pass={cipher_pass}",
        f"lock-path={root / 'lock'}",
        f"log-path={root / 'log'}",
        "log-level-file=info",
        "log-level-console=warn",
        "compress-type=zst",
        "process-max=2",
        "start-fast=y",
        "repo1-retention-full-type=time",
        "repo1-retention-full=7",
        "",
    ])


def start(root: Path, *, home: Path, tls_dir: Path, user: OsUser, cipher_pass: str,
          password: str) -> RepoHost:
    """Make the namespace and its bridge, the certificates, and start the servers (the
    repository host's in the namespace, the database host's on the bridge); returns
    once both accept connections. `password`: the superuser's, which the database host's
    server reads from a 0600 passfile."""
    user.own(root, 0o700)
    host = RepoHost(_free_n(), str(root), home=str(home))
    try:
        _ip("link", "add", host.bridge, "type", "bridge")
        _ip("addr", "add", f"{host.gateway}/24", "dev", host.bridge)
        _ip("link", "set", host.bridge, "up")
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", host.peer)
        _ip("link", "set", host.veth, "master", host.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("link", "set", host.peer, "netns", host.netns)
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.peer)
        _ip("-n", host.netns, "link", "set", host.peer, "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        certs = root / "tls"
        # pgBackRest 2.45 matches a host name against DNS names only: each address is
        # named both ways
        tls.issue(tls_dir, certs, "server", cn=host.address,
                  alt_names=f"DNS:{host.address},IP:{host.address}")
        tls.issue(tls_dir, certs, "client", cn=HOST_CN, alt_names=f"DNS:{HOST_CN}")
        tls.copy(tls_dir / "ca.crt", certs / "ca.crt", 0o644)
        db_certs = backrest.Paths(home).root / "tls"
        tls.issue(tls_dir, db_certs, "server", cn=host.gateway,
                  alt_names=f"DNS:{host.gateway},IP:{host.gateway}")
        for sub in ("repo", "lock", "log"):
            user.own(root / sub, 0o700)
        conf = root / "pgbackrest.conf"
        conf.write_text(_server_conf(host, certs, cipher_pass))
        conf.chmod(0o600)
        if user.switching:
            for path in (certs, certs / "server.key", certs / "client.key", conf,
                         db_certs, db_certs / "server.key"):
                os.chown(path, user.uid, user.gid)
        log = root / "server.log"
        host.pid = _spawn(["ip", "netns", "exec", host.netns, *_as(user), backrest.program(),
                           f"--config={conf}", "server"], log)
        _save(host)
        db_log = backrest.Paths(home).root / "log" / f"server-{host.netns}.log"
        host.db_pid = _spawn([*_as(user), backrest.program(),
                              f"--config={backrest.Paths(home).conf}",
                              f"--tls-server-address={host.gateway}",
                              f"--tls-server-port={DB_PORT}",
                              f"--tls-server-cert-file={db_certs / 'server.crt'}",
                              f"--tls-server-key-file={db_certs / 'server.key'}",
                              f"--tls-server-ca-file={tls_dir / 'ca.crt'}",
                              f"--tls-server-auth={HOST_CN}={backrest.STANZA}", "server"],
                             db_log, env=backrest.db_env(home, user, password))
        _save(host)
        _wait_listening(host, host.pid, PORT, log, netns=host.netns)
        _wait_listening(host, host.db_pid, DB_PORT, db_log, netns=None)
    except BaseException:
        stop(host)
        raise
    return host


def _as(user: OsUser) -> list[str]:
    """setpriv execs: the PID stays the program's own, and stop() signals that one."""
    if not user.switching:
        return []
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                                env={**os.environ, **(env or {})})
    return proc.pid


def host_conf(host: RepoHost, *, pg_path: str, pg_port: int, cipher_pass: str,
              retention_full_days: int = 7) -> None:
    """The repository host's view of the database: today's primary, through the
    database host's server (rewritten before each backup: a failover moves it)."""
    root = Path(host.root)
    certs = root / "tls"
    text = _server_conf(host, certs, cipher_pass).replace(
        "repo1-retention-full=7", f"repo1-retention-full={retention_full_days}")
    text += "\n".join([
        f"[{backrest.STANZA}]",
        f"pg1-host={host.gateway}", "pg1-host-type=tls", f"pg1-host-port={DB_PORT}",
        f"pg1-host-ca-file={certs / 'ca.crt'}", f"pg1-host-cert-file={certs / 'client.crt'}",
        f"pg1-host-key-file={certs / 'client.key'}", f"pg1-path={pg_path}",
        f"pg1-port={pg_port}", f"pg1-user={SUPERUSER}", "",
    ])
    conf = root / "pgbackrest.conf"
    tmp = root / ".pgbackrest.conf.part"
    tmp.write_text(text)
    tmp.chmod(0o600)
    st = root.stat()
    os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(conf)


def host_argv(host: RepoHost, user: OsUser, command: str, *options: str) -> list[str]:
    """A pgBackRest command run on the repository host (in its namespace)."""
    return ["ip", "netns", "exec", host.netns, *_as(user), backrest.program(),
            f"--config={Path(host.root) / 'pgbackrest.conf'}", f"--stanza={backrest.STANZA}",
            *options, command]


def _wait_listening(host: RepoHost, pid: int | None, port: int, log: Path, *,
                    netns: str | None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    where = netns or "the database host"
    while True:
        assert pid is not None
        if not process.alive(pid):
            raise ClusterError(f"pgbackrest server in {where} stopped: {process.tail(log)}")
        ss = ["ss", "-Hltn", f"sport = :{port}"]
        out = subprocess.run(["ip", "netns", "exec", netns, *ss] if netns else ss,
                             capture_output=True, text=True, timeout=10).stdout
        if out.strip():
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"pgbackrest server in {where} not listening on port {port} "
                               f"after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def _save(host: RepoHost) -> None:
    (Path(host.root) / STATE).write_text(json.dumps(asdict(host)))


def load(root: Path) -> RepoHost | None:
    try:
        return RepoHost(**json.loads((root / STATE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def stop(host: RepoHost) -> None:
    """Both servers by their PIDs, then the namespace and the bridge by name."""
    for pid in (host.pid, host.db_pid):
        if pid is not None and process.alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while process.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if process.alive(pid):
                os.kill(pid, signal.SIGKILL)
    _teardown(host.n)
    host.pid = host.db_pid = None
    if Path(host.root).is_dir():
        _save(host)


def _teardown(n: int) -> None:
    ns = f"{PREFIX}{n}"
    if ns in namespaces():
        for pid in _ip("netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", ns, check=False)
    for link in (f"{PREFIX}h{n}", f"{PREFIX}b{n}"):
        if link in _links():
            _ip("link", "del", link, check=False)


def sweep() -> list[str]:
    """Tear down every cmbr-* namespace and bridge no live server holds (left by a killed
    session); returns their names."""
    gone = []
    for ns in namespaces():
        if not _ip("netns", "pids", ns, check=False).stdout.split():
            _teardown(int(ns[len(PREFIX):]))
            gone.append(ns)
    live = set(namespaces())
    for link in _links():
        n = link[len(PREFIX) + 1:]
        if link[len(PREFIX)] in "bh" and inputs.is_digits(n) and f"{PREFIX}{n}" not in live:
            _ip("link", "del", link, check=False)
            gone.append(link)
    return gone


def client_repo(host: RepoHost, tls_dir: Path, certs: Path, user: OsUser) -> backrest.Repo:
    """The cluster's side: repository options naming the host at its bridge address,
    with a client certificate from the same CA (pgBackRest's TLS needs one)."""
    crt, key = tls.issue(tls_dir, certs, "client", cn=CLIENT_CN, alt_names=f"DNS:{CLIENT_CN}")
    if user.switching:
        os.chown(certs, user.uid, user.gid)
        os.chown(key, user.uid, user.gid)
    return backrest.Repo(2, "tls", local_host=host.root, options={
        "host": host.address, "host-port": str(PORT), "host-ca-file": str(tls_dir / "ca.crt"),
        "host-cert-file": str(crt), "host-key-file": str(key), "path": host.repo_path,
    })
