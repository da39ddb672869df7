"""A cluster's home, `$CARDMINT_HOME`: made once with its secrets, locked by one command
at a time, and the `up` every engine shares (adopt what is there, else clean and create).
"""

from __future__ import annotations

import fcntl
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cardmint import secretfile
from cardmint.cluster.engine import UpReport
from cardmint.cluster.pg import backrest, roles
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import READY, ClusterState, load
from cardmint.config import SECRETS_FILE, Settings
from cardmint.errors import ClusterError, UsageError

LOCK_TIMEOUT_S = 120.0
# The files of a home that hold a secret, each mode 0600 (owner only): the database
# roles' passwords (secrets.env), a replica's replication password (local engine, beside
# its data directory), Patroni's configurations and password files, PgBouncer's SCRAM
# verifiers, the TLS keys, pgBackRest's configuration (the repositories' key) and its
# password file and client keys. A password is written nowhere else under the home: the
# rotation's test reads every other file for it, and `security audit` checks these modes.
SECRET_STORES = ("secrets.env", "nodes/*.pgpass", "patroni/*.yml", "patroni/*.pgpass",
                 "pooler/userlist.txt", "tls/*.key", "pgbackrest/pgbackrest.conf",
                 "pgbackrest/pgpass", "pgbackrest/tls/*.key")


@contextmanager
def locked(home: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `home/.lock`: one cardmint command at a time changes a cluster."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"another cardmint command holds {home}/.lock") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def locked_if_free(home: Path) -> Iterator[bool]:
    """The lock if nobody holds it (True), else go on without it (False): for work that
    another command, holding the lock, does itself."""
    with open(home / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def new_home(settings: Settings, home: Path, user: OsUser,
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


def secret_stores(home: Path) -> list[Path]:
    """The secret stores (SECRET_STORES) present under `home`."""
    return sorted(p for pattern in SECRET_STORES for p in home.glob(pattern) if p.is_file())


def purge(home: Path, dirs: tuple[str, ...]) -> list[str]:
    """Delete a cluster's own files under `home` (`dirs`, its state and its secrets);
    the names of what is left on purpose (backups/, drill and incident reports), so
    `cluster down --purge` can say so."""
    for name in dirs:
        shutil.rmtree(home / name, ignore_errors=True)
    (home / "cluster.json").unlink(missing_ok=True)
    # backups/ stays, so the key that decrypts it stays too (alone in the secrets file)
    key = secretfile.read(home / SECRETS_FILE).get(backrest.CIPHER_KEY)
    if key and (home / "backups").is_dir():
        secretfile.write(home / SECRETS_FILE, {backrest.CIPHER_KEY: key})
    else:
        (home / SECRETS_FILE).unlink(missing_ok=True)
    return sorted(p.name + ("/" if p.is_dir() else "") for p in home.iterdir()
                  if p.name != ".lock") if home.is_dir() else []


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


class Creates(Protocol):
    """An engine that makes its cluster on this machine (local, patroni)."""

    provider: str
    home: Path

    async def adopt(self, state: ClusterState, replicas: int | None,
                    sync: bool | None) -> UpReport: ...
    async def clean(self, state: ClusterState | None) -> None: ...
    async def create(self, replicas: int, sync: bool) -> UpReport: ...


async def create_or_adopt(engine: Creates, replicas: int | None,
                          sync: bool | None) -> UpReport:
    """Every engine's `up`, under the home's lock: adopt a ready cluster of this engine,
    else clean what a killed `up` left (never reused) and create."""
    if replicas is not None and replicas < 0:
        raise UsageError("--replicas must be 0 or more")
    began = time.monotonic()
    with locked(engine.home):
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
            report = await engine.adopt(state, replicas, sync)
        else:
            if state is not None or (engine.home / "nodes").exists():
                await engine.clean(state)
                cleaned = True
            report = await engine.create(1 if replicas is None else replicas, bool(sync))
        report.cleaned = cleaned
    report.duration_s = round(time.monotonic() - began, 3)
    return report
