"""argv as flyctl's cobra commands take it: the command words, each command's own flags
(an unknown flag is an error, as in cobra), `--flag value` and `--flag=value`, and the app
name found as internal/command/command.go finds it (-a, then FLY_APP, then a fly.toml in
the working directory)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin import logs, machines, postgres, proxy, secrets, volumes
from standin.world import Exit, edit, err, hashed, record

COMMON_VALUES = {"app", "config"}
SHORT = {"a": "app", "c": "config", "j": "json", "y": "yes"}


@dataclass
class Spec:
    run: Callable[[Args], None]
    values: set[str] = field(default_factory=set)
    bools: set[str] = field(default_factory=set)
    short: dict[str, str] = field(default_factory=dict)
    secret_flags: tuple[str, ...] = ()
    reads_stdin: bool = False


@dataclass
class Args:
    words: list[str]
    flags: dict[str, Any]
    stdin: str
    app_flag: str | None
    command: str = ""

    def app(self, required: bool = True) -> str | None:
        """RequireAppName / LoadAppNameIfPresent (internal/command/command.go)."""
        name = self.app_flag or os.environ.get("FLY_APP") or _fly_toml_app()
        if not name and required:
            raise Exit("the config for your app is missing an app name, add an app field "
                       "to the fly.toml file or specify with the -a flag")
        return name or None

    def get(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)


def _fly_toml_app() -> str | None:
    try:
        with open("fly.toml") as fh:
            text = fh.read()
    except OSError:
        return None
    found = re.search(r'^app\s*=\s*["\']([^"\']+)["\']', text, re.M)
    return found.group(1) if found else None


SIZE_FLAGS = {"vm-size", "vm-cpus", "vm-cpu-kind", "vm-memory", "host-dedication-id"}

COMMANDS: dict[tuple[str, ...], Spec] = {
    ("status",): Spec(machines.status, {"rate"}, {"json", "all", "deployment", "watch"}),
    ("machine", "list"): Spec(machines.list_, set(), {"json", "quiet"}, {"q": "quiet"}),
    ("machine", "kill"): Spec(machines.kill, set(), {"select"}),
    ("machine", "stop"): Spec(machines.stop, {"signal", "timeout", "wait-timeout"},
                              {"select"}, {"s": "signal", "w": "wait-timeout"}),
    ("machine", "start"): Spec(machines.start, set(), {"select"}),
    ("machine", "update"): Spec(machines.update, SIZE_FLAGS | {"wait-timeout", "image",
                                                              "command", "mount-point"},
                                {"yes", "skip-start", "skip-health-checks", "select"},
                                {"C": "command"}),
    ("postgres", "failover"): Spec(postgres.failover, set(), {"force",
                                                             "allow-secondary-region"}),
    ("postgres", "create"): Spec(
        postgres.create,
        SIZE_FLAGS | {"region", "org", "name", "password", "initial-cluster-size",
                      "volume-size", "consul-url", "snapshot-id", "fork-from", "image-ref"},
        {"detach", "enable-backups", "generate-name", "stolon", "flex", "autostart"},
        {"r": "region", "o": "org", "n": "name", "p": "password"},
        secret_flags=("password",)),
    ("postgres", "connect"): Spec(postgres.connect, {"database", "user", "password"},
                                  set(), {"d": "database", "u": "user", "p": "password"}),
    ("volumes", "list"): Spec(volumes.list_, set(), {"json", "all"}),
    ("volumes", "extend"): Spec(volumes.extend, {"size"}, {"yes", "json"}, {"s": "size"}),
    ("volumes", "snapshots", "create"): Spec(volumes.snapshot_create, set(), {"json"}),
    ("volumes", "snapshots", "list"): Spec(volumes.snapshot_list, set(), {"json"}),
    ("secrets", "import"): Spec(secrets.import_, set(), {"detach", "stage", "dns-checks"},
                                reads_stdin=True),
    ("secrets", "deploy"): Spec(secrets.deploy, set(), {"detach", "dns-checks"}),
    ("logs",): Spec(logs.logs, {"region", "machine"}, {"json", "no-tail", "select"},
                    {"r": "region", "m": "machine", "n": "no-tail", "s": "select"}),
    ("proxy",): Spec(proxy.proxy, {"org", "bind-addr"}, {"select", "quiet", "watch-stdin"},
                     {"o": "org", "b": "bind-addr", "s": "select", "q": "quiet"}),
    ("apps", "destroy"): Spec(machines.destroy_apps, set(), {"yes"}),
}
ALIASES = {"machines": "machine", "m": "machine", "pg": "postgres", "volume": "volumes",
           "vol": "volumes", "snapshot": "snapshots", "snaps": "snapshots", "ls": "list",
           "app": "apps"}


def parse(argv: list[str]) -> tuple[Spec, Args]:
    words: list[str] = []
    i = 0
    while i < len(argv) and not argv[i].startswith("-"):
        words.append(ALIASES.get(argv[i], argv[i]))
        i += 1
    spec = None
    for n in (3, 2, 1):
        spec = COMMANDS.get(tuple(words[:n]))
        if spec is not None:
            positional, command = words[n:], " ".join(words[:n])
            break
    if spec is None:
        raise Exit(f'unknown command "{" ".join(words)}" for "flyctl"')
    values = spec.values | COMMON_VALUES
    bools = spec.bools
    short = {**SHORT, **spec.short}
    flags: dict[str, Any] = {}
    rest = argv[i:]
    j = 0
    while j < len(rest):
        arg = rest[j]
        j += 1
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--"):
            if name not in short:
                raise Exit(f"unknown shorthand flag: '{name[:1]}' in {arg}")
            name = short[name]
        if name in bools:
            flags[name] = value.lower() != "false" if eq else True
        elif name in values:
            if not eq:
                if j >= len(rest):
                    raise Exit(f"flag needs an argument: {arg}")
                value = rest[j]
                j += 1
            flags[name] = value
        else:
            raise Exit(f"unknown flag: --{name}")
    reads = spec.reads_stdin and sys.stdin is not None and not sys.stdin.isatty()
    stdin = sys.stdin.read() if reads else ""
    return spec, Args(positional, flags, stdin, flags.get("app"), command)


def recorded_argv(argv: list[str], spec: Spec | None) -> list[str]:
    """argv with the values of secret flags hashed."""
    out = list(argv)
    if spec is None:
        return out
    for k, arg in enumerate(out):
        for name in spec.secret_flags:
            if arg in (f"--{name}", "-p") and k + 1 < len(out):
                out[k + 1] = hashed(out[k + 1])
            elif arg.startswith(f"--{name}="):
                out[k] = f"--{name}={hashed(arg.partition('=')[2])}"
    return out


def main(argv: list[str]) -> int:
    spec: Spec | None = None
    try:
        spec, args = parse(argv)
    except Exit as exc:
        record(recorded_argv(argv, None), None)
        err(f"Error: {exc}\n")
        return exc.code
    record(recorded_argv(argv, spec),
           secrets.recorded_stdin(args.stdin) if spec.reads_stdin else None)
    try:
        with edit() as w:  # a test's injected failure: {"fail": {"machine kill": "..."}}
            injected = next((message for prefix, message in (w.get("fail") or {}).items()
                             if args.command.startswith(prefix)), None)
        if injected is not None:
            raise Exit(injected)
        spec.run(args)
    except Exit as exc:
        err(f"Error: {exc}\n")
        return exc.code
    return 0
