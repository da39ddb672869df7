"""PostgreSQL processes: run programs as the unprivileged OS user, start a postmaster,
wait for it, stop it by PID.

initdb and postgres refuse to run as root, so when CardMint runs as root every server
program runs as `pg_os_user` and every directory they touch is owned by that user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cardmint import inputs
from cardmint.dsn import redact
from cardmint.errors import ClusterError


@dataclass(frozen=True)
class OsUser:
    """Who server programs run as; `name=None` means the invoking user."""

    name: str | None
    uid: int
    gid: int

    @classmethod
    def resolve(cls, wanted: str) -> OsUser:
        if os.geteuid() != 0:
            return cls(None, os.geteuid(), os.getegid())
        try:
            entry = pwd.getpwnam(wanted)
        except KeyError:
            raise ClusterError(
                f"running as root, PostgreSQL must run as an unprivileged user, and OS user "
                f"{wanted!r} does not exist: create it (useradd --system {wanted}) or set "
                "CARDMINT_PG_OS_USER"
            ) from None
        return cls(wanted, entry.pw_uid, entry.pw_gid)

    @property
    def switching(self) -> bool:
        return self.name is not None

    def own(self, path: Path, mode: int = 0o700) -> None:
        """Make `path` a directory this user owns with `mode` (PostgreSQL insists on 0700)."""
        path.mkdir(parents=True, exist_ok=True)
        if self.switching:
            os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)

    def check_reachable(self, path: Path) -> None:
        """Every parent of `path` must let this user through, or the server cannot start."""
        if not self.switching:
            return
        for parent in path.resolve().parents:
            st = parent.stat()
            if st.st_uid == self.uid:
                ok = st.st_mode & 0o100
            elif st.st_gid == self.gid:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                raise ClusterError(
                    f"OS user {self.name!r} cannot reach {path}: {parent} (mode "
                    f"{oct(st.st_mode & 0o777)}) does not let it through. Set CARDMINT_HOME to "
                    "a directory it can reach (for example under /var/tmp or /srv)."
                )

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a program as this user; a failure raises ClusterError with its redacted output."""
        full_env = {**os.environ, **(env or {})}
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, env=full_env, input=input, timeout=timeout,
                user=self.uid if self.switching else None,
                group=self.gid if self.switching else None,
                cwd="/",  # the invoking user's cwd may be unreadable to the server user
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{Path(argv[0]).name} failed: {redact(str(exc))}") from exc
        if done.returncode != 0:
            out = redact((done.stderr or done.stdout).strip())[-2000:]
            raise ClusterError(f"{Path(argv[0]).name} exited {done.returncode}: {out}")
        return done

    def spawn(self, argv: list[str], log: Path) -> int:
        """Start a long-running server in its own session (Ctrl-C in a terminal must not
        reach it) with output appended to `log`; returns its PID."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd="/",
                user=self.uid if self.switching else None,
                group=self.gid if self.switching else None,
            )
        _children[proc.pid] = proc
        return proc.pid


# Servers this process started: polled so that they never linger as zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


def alive(pid: int) -> bool:
    """True while `pid` is a live process (an exited child is reaped, not counted)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def postmaster_pid(datadir: Path) -> int | None:
    """The PID of the postmaster running on `datadir`, or None.

    postmaster.pid alone is not proof: after a crash it stays behind and its PID may
    since belong to another program, so the process's command line must name the
    directory too.
    """
    try:
        first = (datadir / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    if not alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if str(datadir).encode() in cmdline and any(b"postgres" in part for part in cmdline[:1]):
        return pid
    return None


def postmaster_status(datadir: Path) -> str | None:
    """The server's own word in postmaster.pid line 8: starting, ready, standby, stopping."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    return lines[7].strip() if len(lines) > 7 else None


async def wait_ready(datadir: Path, pid: int, log: Path, timeout: float = 60.0,
                     stuck_after: float | None = None) -> None:
    """Poll until the server says it accepts connections (ready, or standby for a replica).
    With `stuck_after`: give up once recovery has shown no progress for that long (its
    startup process's title names the WAL segment it replays; a standby not yet
    consistent that no source can feed would otherwise wait out `timeout`)."""
    deadline = time.monotonic() + timeout
    seen: tuple[str | None, float] = (None, time.monotonic())
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ClusterError(f"PostgreSQL on {datadir} exited while starting: {tail(log)}")
        if postmaster_status(datadir) in ("ready", "standby"):
            return
        if stuck_after is not None:
            title = startup_title(datadir)
            if title != seen[0]:
                seen = (title, time.monotonic())
            elif title is not None and time.monotonic() - seen[1] > stuck_after:
                raise ClusterError(
                    f"PostgreSQL on {datadir} made no recovery progress in {stuck_after:.0f} s "
                    f"before it was consistent ({title}): a WAL segment it needs is missing")
        await asyncio.sleep(0.02)
    raise ClusterError(f"PostgreSQL on {datadir} was not ready after {timeout:.0f} s: {tail(log)}")


def startup_title(datadir: Path) -> str | None:
    """What the startup process's title says it does ("recovering 0000000200000000000000
    05", "waiting for ..."), or None while there is none."""
    for pid in datadir_pids(datadir):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        _, sep, doing = title.partition(": startup ")
        if sep:
            return doing.strip()
    return None


Ladder = tuple[tuple[signal.Signals, str, float], ...]  # (signal, its name, seconds to wait)


async def escalate(pid: int, ladder: Ladder, what: str) -> str:
    """Send each signal of `ladder` in turn until `pid` is gone; the name of the one that
    worked (or of the one that found it already gone)."""
    for sig, mode, wait in ladder:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return mode
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return mode
            await asyncio.sleep(0.02)
    raise ClusterError(f"{what} {pid} did not stop, even after SIGKILL")


async def stop(pid: int, timeout: float = 30.0) -> str:
    """Stop a postmaster by PID: fast shutdown, then immediate, then SIGKILL. Returns the
    mode that worked."""
    return await escalate(pid, ((signal.SIGINT, "fast", timeout),
                                (signal.SIGQUIT, "immediate", 10.0),
                                (signal.SIGKILL, "kill", 10.0)), "PostgreSQL process")


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return redact("\n".join(text))


GONE_TIMEOUT_S = 30.0


def datadir_pids(datadir: Path) -> set[int]:
    """Live PostgreSQL processes working in `datadir`. Every one of them changes into its
    data directory, backends that outlive their postmaster included (their command line
    no longer names the directory)."""
    target = os.path.realpath(datadir)
    found = set()
    for name in os.listdir("/proc"):
        if not inputs.is_digits(name):
            continue
        try:
            if os.readlink(f"/proc/{name}/cwd") != target:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if not f.read(8).startswith(b"postgres"):
                    continue  # a person's shell in that directory, say
        except OSError:
            continue
        if alive(int(name)):
            found.add(int(name))
    return found


async def kill_leftovers(datadir: Path) -> int:
    """SIGKILL what outlived a dead postmaster (backends, WAL senders) and wait until it
    is gone: a leftover backend could still acknowledge a commit the new primary never
    gets, and a leftover WAL sender could push a replica past the promotion point."""
    pids = datadir_pids(datadir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await wait_gone(datadir, timeout=10, interval=0.002)  # on a failover's critical path
    return len(pids)


async def wait_gone(datadir: Path, timeout: float = GONE_TIMEOUT_S,
                    interval: float = 0.02) -> None:
    """Until no process works in `datadir` (a restart or pg_rewind would find its shared
    memory still attached)."""
    deadline = time.monotonic() + timeout
    while pids := datadir_pids(datadir):
        if time.monotonic() > deadline:
            raise ClusterError(f"processes {sorted(pids)} still run in {datadir}")
        await asyncio.sleep(interval)
    stale = datadir / "postmaster.pid"
    if stale.exists() and postmaster_pid(datadir) is None:
        stale.unlink()


def is_postgres(pid: int) -> bool:
    """Whether `pid` runs a PostgreSQL program (a recorded PID may have been reused)."""
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
