"""`flyctl proxy`: a loopback port to an app's Postgres, for as long as a block runs.

`flyctl proxy 0:5432 -a APP --watch-stdin` (internal/command/proxy/proxy.go,
proxy/connect.go) binds a free port on 127.0.0.1, prints `Proxying localhost:PORT to
remote [APP.internal]:5432` once the app's name resolves, and relays to the app's port
5432 (the proxy in front of the primary: HAProxy on flex). With --watch-stdin it ends
when its stdin closes; CardMint closes it, then stops the process by its PID. flyctl may
start its own WireGuard agent (`flyctl agent`), which outlives it by design: that one is
flyctl's, not ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from cardmint.cluster.fly.flyctl import Flyctl, ident
from cardmint.errors import ClusterError

PG_PROXY_PORT = 5432
_LISTENING = re.compile(r"Proxying localhost:(\d+) to remote")


@contextlib.asynccontextmanager
async def proxied(flyctl: Flyctl, app: str, *, timeout_s: float) -> AsyncIterator[int]:
    """The local port that reaches `app`'s Postgres while the block runs."""
    argv = [flyctl.path, "proxy", f"0:{PG_PROXY_PORT}", "-a", ident(app, "app"),
            "--watch-stdin"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=flyctl.env)
    except OSError as exc:
        raise ClusterError(f"flyctl proxy could not run: {exc.strerror or exc}") from None
    try:
        try:
            port = await asyncio.wait_for(_port(proc), timeout_s)
        except TimeoutError:
            raise ClusterError(f"flyctl proxy to {app} did not listen within "
                               f"{timeout_s:g} s (its name may not resolve yet)") from None
        if port is None:
            stderr = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
            raise ClusterError(f"flyctl proxy to {app} failed: "
                               f"{flyctl.clean(stderr.strip())[-500:] or 'no output'}")
        yield port
    finally:
        await _stop(proc)


async def _port(proc: asyncio.subprocess.Process) -> int | None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        found = _LISTENING.search(line.decode(errors="replace"))
        if found:
            return int(found.group(1))
    return None


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Close its stdin (--watch-stdin ends it), then SIGTERM and SIGKILL by PID."""
    if proc.stdin is not None:
        proc.stdin.close()
    for signal_it in (None, proc.terminate, proc.kill):
        if proc.returncode is not None:
            return
        if signal_it is not None:
            with contextlib.suppress(ProcessLookupError):
                signal_it()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)
