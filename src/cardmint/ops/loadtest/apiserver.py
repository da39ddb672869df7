"""`cardmint serve` as a child process on a free loopback port, for load tests and benches:
started, waited for until ready, and stopped by PID on every way out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import httpx

from cardmint.cluster.home import free_ports
from cardmint.config import Settings
from cardmint.dsn import redact
from cardmint.errors import ClusterError

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@asynccontextmanager
async def serving(settings: Settings, *, extra_args: tuple[str, ...] = (),
                  log_to: Path | None = None) -> AsyncIterator[tuple[str, int]]:
    """The API's base URL and its PID while the block runs; `extra_args` go to serve.
    The server's output goes to `log_to` when given (kept, for the caller to read), else
    to a temporary file deleted afterwards."""
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "cardmint", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--home", str(settings.home), *extra_args]
    log: IO[bytes] = (await asyncio.to_thread(open, log_to, "wb") if log_to is not None
                      else tempfile.NamedTemporaryFile(prefix="cardmint-serve-", suffix=".log",
                                                       delete=False))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "CARDMINT_HOME": str(settings.home)})
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, proc, Path(log.name))
        yield url, proc.pid
    finally:
        await _stop(proc)
        if log_to is None:
            _discard(log)
        else:
            log.close()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Until /health/ready answers 200 (the data layer is open and migrated)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=2.0) as http:
        while True:
            if proc.returncode is not None:
                raise ClusterError(f"cardmint serve exited {proc.returncode}: {_tail(log)}")
            try:
                if (await http.get("/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"cardmint serve not ready within {READY_TIMEOUT_S:.0f} s: "
                                   f"{_tail(log)}")
            await asyncio.sleep(0.1)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it lingers; by PID only."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _discard(log: IO[bytes]) -> None:
    log.close()
    Path(log.name).unlink(missing_ok=True)


def _tail(log: Path, chars: int = 2000) -> str:
    try:
        return redact(log.read_text(errors="replace")[-chars:].strip())
    except OSError:
        return "(no log)"
