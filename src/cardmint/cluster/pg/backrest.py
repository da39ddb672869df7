"""pgBackRest, the engine of backups and WAL archiving: its configuration under
`$CARDMINT_HOME/pgbackrest/`, its commands run as the server's OS user, its `info`.

Repository 1 is `$CARDMINT_HOME/backups` (posix). More repositories (a repository host
reached over TLS, S3-compatible object storage) are listed, without secrets, in
`pgbackrest/repos.json`; their secrets and the cipher key live in the secrets file and
reach pgBackRest only through its configuration file (mode 0600, the server user's):
never argv, never a log line. Every repository is encrypted (aes-256-cbc) with one key.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardmint import inputs, secretfile
from cardmint.cluster.pg import process
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import SUPERUSER
from cardmint.errors import ClusterError

STANZA = "cardmint"
CIPHER_KEY = "CARDMINT_BACKUP_CIPHER_PASS"
CIPHER_TYPE = "aes-256-cbc"
# Options a repository may carry whose values are secrets: kept in the secrets file as
# CARDMINT_BACKUP_REPO<N>_<OPTION> and written only into the 0600 configuration file.
LOCK_WAIT_S = 30.0
SECRET_OPTIONS = ("s3-key", "s3-key-secret", "s3-token")
REPO_KINDS = ("posix", "tls", "s3")


def program() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        raise ClusterError("pgBackRest is missing (Debian: apt-get install pgbackrest; "
                           "`make pgbackrest` does it)")
    return found


@dataclass(frozen=True)
class Paths:
    """Where pgBackRest's files live for a cluster home."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "pgbackrest"

    @property
    def conf(self) -> Path:
        return self.root / "pgbackrest.conf"

    @property
    def repos_file(self) -> Path:
        return self.root / "repos.json"

    @property
    def repo1(self) -> Path:
        return self.home / "backups"


def archive_command(root: Path) -> str:
    """archive_command for any node: pg1-path is the server's working directory, its
    data directory, so one setting serves every node (and Patroni's)."""
    return (f'{program()} --config={root / "pgbackrest.conf"} --stanza={STANZA} '
            f'--pg1-path="$PWD" archive-push "%p"')


def restore_command(root: Path, repo: int | None = None, *, prefetch: bool = True) -> str:
    """restore_command through archive-get. `prefetch` (asynchronous, queued ahead) suits
    a restore replaying the archive in bulk. A standby or a rejoining node asks for a
    segment only when streaming cannot give it, and at promotion it asks for the next
    segment and timeline files before recovery ends: there a missing file must answer at
    once, not after the asynchronous process (seen: promotions of 55-60 s in the suite)."""
    only = f" --repo={repo}" if repo else ""
    sync = "" if prefetch else " --no-archive-async"
    return (f'{program()} --config={root / "pgbackrest.conf"} --stanza={STANZA}{only}{sync} '
            f'--pg1-path="$PWD" archive-get %f "%p"')


@dataclass
class Repo:
    """One repository besides repo1: its number, kind and (non-secret) options without
    the `repoN-` prefix, for example {"host": "10.232.0.2", "host-port": "8432", ...}.
    `local_host`: a repository host made on this machine (repohost.py), whose directory
    says how to run commands on it."""

    index: int
    kind: str
    options: dict[str, str] = field(default_factory=dict)
    local_host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "options": self.options,
                "local_host": self.local_host}


def repos(home: Path) -> list[Repo]:
    try:
        raw = json.loads(Paths(home).repos_file.read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise ClusterError(f"{Paths(home).repos_file} is not JSON: {exc}") from None
    return [Repo(int(r["index"]), str(r["kind"]),
                 {str(k): str(v) for k, v in r["options"].items()}, r.get("local_host"))
            for r in raw]


def add_repo(home: Path, secrets_path: Path, repo: Repo,
             secret_values: dict[str, str] | None = None) -> None:
    """Record repository `repo` (replacing one of the same number) and its secrets."""
    if repo.index < 2 or repo.index > 4:
        raise ClusterError(f"repository number {repo.index}: 2 to 4 (repo1 is the local one)")
    if repo.kind not in REPO_KINDS:
        raise ClusterError(f"repository kind {repo.kind!r}: one of {', '.join(REPO_KINDS)}")
    given = secret_values or {}
    unknown = set(given) - set(SECRET_OPTIONS)
    if unknown or set(repo.options) & set(SECRET_OPTIONS):
        raise ClusterError(f"secret repository options go in secret_values only: "
                           f"{', '.join(sorted(set(SECRET_OPTIONS)))}")
    kept = [r for r in repos(home) if r.index != repo.index] + [repo]
    p = Paths(home)
    p.root.mkdir(parents=True, exist_ok=True)
    p.repos_file.write_text(json.dumps([r.to_dict() for r in sorted(kept, key=lambda r:
                                                                      r.index)], indent=2))
    if given:
        pairs = secretfile.read(secrets_path)
        pairs.update({_secret_key(repo.index, k): v for k, v in given.items()})
        secretfile.write(secrets_path, pairs)


def remove_repo(home: Path, index: int) -> None:
    p = Paths(home)
    kept = [r.to_dict() for r in repos(home) if r.index != index]
    if p.repos_file.exists():
        p.repos_file.write_text(json.dumps(kept, indent=2))


def _secret_key(index: int, option: str) -> str:
    return f"CARDMINT_BACKUP_REPO{index}_{option.upper().replace('-', '_')}"


def cipher_pass(secrets_path: Path) -> str:
    """The repositories' cipher key from the secrets file, made there on first use."""
    pairs = secretfile.read(secrets_path)
    if not pairs.get(CIPHER_KEY):
        pairs[CIPHER_KEY] = secrets.token_urlsafe(48)
        secretfile.write(secrets_path, pairs)
    return pairs[CIPHER_KEY]


@dataclass(frozen=True)
class Pg:
    """The database pgBackRest backs up: the primary's data directory and port."""

    path: str
    port: int


def render(home: Path, secrets_path: Path, pg: Pg, *, retention_full_days: int = 7) -> str:
    """The configuration file's text (holds secrets: written 0600 only)."""
    p = Paths(home)
    key = cipher_pass(secrets_path)
    pairs = secretfile.read(secrets_path)
    lines = [
        "# Written by cardmint (cluster/pg/backrest.py); holds secrets: mode 0600.",
        "[global]",
        f"lock-path={p.root / 'lock'}",
        f"log-path={p.root / 'log'}",
        f"spool-path={p.root / 'spool'}",
        "log-level-console=warn",
        "log-level-file=info",
        "archive-async=y",
        "process-max=2",
        "compress-type=zst",
        "start-fast=y",
        f"repo1-path={p.repo1}",
        f"repo1-cipher-type={CIPHER_TYPE}",
        f"repo1-cipher-pass={key}",
        "repo1-retention-full-type=time",
        f"repo1-retention-full={retention_full_days}",
    ]
    for repo in repos(home):
        n = repo.index
        if repo.kind == "tls":
            lines.append(f"repo{n}-host-type=tls")
        elif repo.kind == "s3":
            # small files bundled: fewer requests (each is a round trip, and billed)
            lines += [f"repo{n}-type=s3", f"repo{n}-bundle=y"]
        else:
            lines.append(f"repo{n}-type=posix")
        lines += [f"repo{n}-{k}={v}" for k, v in repo.options.items()]
        # a repository host holds the key too: commands run there and here both
        # read and write the repository's files
        lines += [f"repo{n}-cipher-type={CIPHER_TYPE}", f"repo{n}-cipher-pass={key}"]
        lines += [f"repo{n}-retention-full-type=time",
                  f"repo{n}-retention-full={retention_full_days}"]
        for opt in SECRET_OPTIONS:
            value = pairs.get(_secret_key(n, opt))
            if value:
                lines.append(f"repo{n}-{opt}={value}")
    lines += ["", f"[{STANZA}]", f"pg1-path={pg.path}", f"pg1-port={pg.port}",
              f"pg1-user={SUPERUSER}", ""]
    return "\n".join(lines)


def write_config(home: Path, secrets_path: Path, user: OsUser, pg: Pg, *,
                 retention_full_days: int = 7) -> Path:
    """(Re)write the configuration for the current primary, and the directories
    pgBackRest writes to, owned by the server's OS user."""
    p = Paths(home)
    user.own(p.root, 0o700)
    for sub in ("lock", "log", "spool"):
        user.own(p.root / sub, 0o700)
    user.own(p.repo1, 0o700)
    text = render(home, secrets_path, pg, retention_full_days=retention_full_days)
    fd, tmp = tempfile.mkstemp(dir=p.root, prefix=".conf.")
    try:
        os.fchmod(fd, 0o600)
        if user.switching:
            os.fchown(fd, user.uid, user.gid)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, p.conf)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p.conf


def base_argv(home: Path, command: str, *options: str) -> list[str]:
    return [program(), f"--config={Paths(home).conf}", f"--stanza={STANZA}", *options, command]


def db_env(home: Path, user: OsUser, password: str) -> dict[str, str]:
    """How pgBackRest's libpq reaches the primary: TCP on loopback (the servers have no
    Unix socket), the superuser's password in a 0600 passfile of the server's OS user,
    never in argv or the environment."""
    passfile = Paths(home).root / "pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"127.0.0.1:*:*:{SUPERUSER}:{_pgpass_escape(password)}\n")
    if user.switching:
        os.chown(passfile, user.uid, user.gid)
    return {"PGHOST": "127.0.0.1", "PGPASSFILE": str(passfile), "PGSSLMODE": "prefer",
            "PGAPPNAME": "cardmint-pgbackrest"}


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def run(home: Path, user: OsUser, command: str, *options: str,
        env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = user.run(base_argv(home, command, *options), env=env, timeout=timeout)
    return done.stdout


def stanza_create(home: Path, user: OsUser, password: str) -> None:
    """Make the stanza in every repository (idempotent: an existing one that matches
    the database is accepted)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            run(home, user, "stanza-create", env=db_env(home, user, password), timeout=120)
            return
        except ClusterError as exc:
            # the asynchronous archive-push holds the archive lock for a moment
            if "[050]" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def info(home: Path, user: OsUser, *options: str) -> dict[str, Any]:
    """The stanza's entry of `pgbackrest info --output=json` (backups, archive, status)."""
    out = run(home, user, "info", "--output=json", *options, timeout=120)
    try:
        stanzas = json.loads(out)
    except ValueError as exc:
        raise ClusterError(f"pgbackrest info did not answer JSON: {exc}") from None
    for entry in stanzas:
        if entry.get("name") == STANZA:
            return dict(entry)
    return {"name": STANZA, "backup": [], "archive": [], "status": {"code": 1}}


def set_aside_old_repo(home: Path) -> Path | None:
    """A new cluster in a home whose repo1 holds another (purged) cluster's backups: its
    stanza could not be made there, so the old repository moves to `backups-<time>`
    (kept, as purge keeps backups; the cipher key stays in the secrets file)."""
    p = Paths(home)
    if not (p.repo1 / "backup" / STANZA).exists():
        return None
    from cardmint.clock import utc

    aside = home / f"backups-{utc().strftime('%Y%m%dT%H%M%SZ')}"
    p.repo1.rename(aside)
    return aside


def prepare(home: Path, secrets_path: Path, user: OsUser, pg: Pg, *, new: bool) -> None:
    """Before a cluster's first start: the configuration pgBackRest's archive-push reads."""
    if new:
        set_aside_old_repo(home)
    write_config(home, secrets_path, user, pg)


def async_pids(home: Path) -> list[int]:
    """PIDs of this home's asynchronous archive-push/archive-get processes: they outlive
    the server that started them while they work through the queue."""
    conf = f"--config={Paths(home).conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not inputs.is_digits(entry.name):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"pgbackrest") and conf in argv and any(
                a.endswith(b":async") for a in argv):
            found.append(int(entry.name))
    return found


async def stop_async(home: Path, timeout: float = 5.0) -> list[int]:
    """Stop them by PID (TERM, then KILL): a cluster that is down archives nothing more,
    and its next start queues whatever is left again."""
    pids = async_pids(home)
    ladder = ((signal.SIGTERM, "term", timeout), (signal.SIGKILL, "kill", 5.0))
    await asyncio.gather(*(process.escalate(pid, ladder, "pgBackRest's asynchronous process")
                           for pid in pids))
    return pids
