"""Running flyctl: one command at a time, in a worker thread, always with a bound.

flyctl run by CardMint sees no terminal, so every question it would ask is an error at
once (internal/prompt/prompt.go: "... must be specified when not running interactively");
it prints `Error: ...` on stderr and exits 1 (internal/cli/cli.go). Failures (flyctl
missing, a non-zero exit, a run cut off at its bound, output that is not the JSON
promised) become `ClusterError`s whose text has passed through `redact` and has every
secret value this runner has handled masked. A run cut off raises `FlyctlTimeout`, so
the caller can say what flyctl may have left half done.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cardmint.dsn import redact
from cardmint.errors import ClusterError, UsageError

MASK = "***"
# flyctl identifiers: app names, machine/volume/snapshot ids, VM sizes, regions, orgs.
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[..., RunResult]


class FlyctlTimeout(ClusterError):
    """flyctl ran past CardMint's bound and was stopped; what it did so far stays done."""


def subprocess_runner(argv: Sequence[str], *, input: str | None, timeout: float,
                      env: Mapping[str, str] | None) -> RunResult:
    """Run one flyctl command; raise `subprocess.TimeoutExpired` / `OSError` as they come.
    stdin is a pipe (closed at once when there is nothing to send), never a terminal."""
    proc = subprocess.run(list(argv), input=input if input is not None else "",
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else None, check=False)
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def ident(value: str, what: str) -> str:
    """`value` if it can only be read as one flyctl identifier (never as a flag)."""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise UsageError(f"not a valid {what}: {value!r}")
    return value


class Flyctl:
    """The flyctl binary, its environment and the secrets to keep out of messages."""

    def __init__(self, path: str = "flyctl", *, runner: Runner | None = None,
                 env: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> None:
        self.path = path
        self.runner: Runner = runner or subprocess_runner
        self.env = {**os.environ, **env} if env is not None else None
        self.timeout_s = timeout_s
        self._secrets: set[str] = set()

    def hide(self, value: str) -> None:
        """Mask `value` in every message from now on."""
        if value:
            self._secrets.add(value)

    def clean(self, text: str) -> str:
        """Redact DSN passwords and every secret value this runner has handled."""
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, MASK)
        return redact(text)

    async def run(self, *args: str, stdin: str | None = None, want_json: bool = False,
                  timeout_s: float | None = None) -> Any:
        """stdout (parsed when `want_json`) of `flyctl ARGS`, run within `timeout_s`."""
        return (await self.result(*args, stdin=stdin, timeout_s=timeout_s,
                                  want_json=want_json))[0]

    async def result(self, *args: str, stdin: str | None = None, want_json: bool = False,
                     timeout_s: float | None = None,
                     check: bool = True) -> tuple[Any, RunResult]:
        """(stdout or its JSON, the whole result); with `check` False a non-zero exit is
        returned rather than raised."""
        argv = [self.path, *args]
        shown = self.clean(" ".join(args))
        timeout = timeout_s or self.timeout_s
        try:
            result = await asyncio.to_thread(self.runner, argv, input=stdin, timeout=timeout,
                                             env=self.env)
        except subprocess.TimeoutExpired:
            raise FlyctlTimeout(f"flyctl {shown} was cut off after {timeout:g} s") from None
        except FileNotFoundError:
            raise ClusterError(f"flyctl not found ({self.path!r}): install it from "
                               "https://fly.io/docs/flyctl/install/ or put it on PATH") from None
        except OSError as exc:
            raise ClusterError(f"flyctl {shown} could not run: "
                               f"{self.clean(exc.strerror or str(exc))}") from None
        if result.returncode != 0:
            if not check:
                return None, result
            raise ClusterError(f"flyctl {shown} failed (exit {result.returncode}): "
                               f"{self.error_text(result)}")
        if not want_json:
            return result.stdout, result
        try:
            return json.loads(result.stdout), result
        except json.JSONDecodeError:
            raise ClusterError(f"flyctl {shown} did not answer JSON: "
                               f"{self.clean(result.stdout.strip())[:200]!r}") from None

    def error_text(self, result: RunResult) -> str:
        """flyctl's own `Error: ...` line(s), cleaned; else the end of what it printed."""
        errors = [line[line.index("Error: "):] for line in result.stderr.splitlines()
                  if "Error: " in line]  # flyctl may print it after an unterminated line
        detail = "\n".join(errors) or result.stderr.strip() or result.stdout.strip()
        return self.clean(detail or "no output")[-2000:]
