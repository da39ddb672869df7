"""`cardmint serve --workers N`: N server processes on one listening socket.

The parent binds the socket, starts N children (`cardmint serve --fd`) that inherit it,
and only supervises: on SIGTERM/SIGINT it stops every child by PID (SIGTERM, then
SIGKILL after a grace period). The background loops (intake worker, monitor, sync guard)
run in child 0 alone, so they run once whatever N is. If a child exits on its own the
others are stopped too and the parent exits 2: a half-sized server is not left running.
Children die with the parent (PR_SET_PDEATHSIG), also when the parent is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cardmint.errors import UsageError

log = logging.getLogger("cardmint.api.workers")
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every child accepts on (inherited by file descriptor)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_argv(fd: int, index: int, home: Path, background: Sequence[str],
               common: Sequence[str] = ()) -> list[str]:
    """Child `index`'s command: the socket's fd and the `common` options; the background
    loops only in child 0."""
    argv = [sys.executable, "-m", "cardmint", "serve", "--fd", str(fd), "--home", str(home),
            *common]
    return argv + (list(background) if index == 0
                   else ["--no-worker", "--no-monitor", "--no-sync-guard"])


def supervise(host: str, port: int, workers: int, home: Path,
              background: Sequence[str], common: Sequence[str] = ()) -> int:
    """Run `workers` children until a signal or a child's exit; the exit code."""
    sock = bind(host, port)
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for index in range(workers):
            children.append(subprocess.Popen(
                child_argv(sock.fileno(), index, home, background, common),
                pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent))
        log.info("serving on %s:%d with %d worker processes (PIDs %s)", host, port, workers,
                 ", ".join(str(c.pid) for c in children))
        print(f"cardmint serve: {workers} workers on {host}:{port}, PIDs "
              f"{' '.join(str(c.pid) for c in children)}", flush=True)
        code = 0
        while not stopping:
            gone = [c for c in children if c.poll() is not None]
            if gone:
                print(f"cardmint serve: worker PID {gone[0].pid} exited {gone[0].returncode}; "
                      "stopping the others", file=sys.stderr, flush=True)
                code = 2
                break
            time.sleep(0.2)  # the supervisor's only work is noticing a dead child
        return code
    finally:
        sock.close()
        stop_all(children)


def stop_all(children: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child by PID, wait for all within the grace period, SIGKILL the rest."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
