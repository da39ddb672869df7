"""The Fly engine: the runbook's flyctl commands behind the local engine's operations.

How CardMint uses it
--------------------
With ``CARDMINT_PROVIDER=fly`` and ``CARDMINT_FLY_APP=cardmint-db`` the `cardmint cluster`
commands drive a Fly Postgres app instead of the local engine (`cluster.provider` chooses)::

    cluster = FlyCluster.from_settings(settings)
    await cluster.status()            # same contract as LocalCluster.status(), provider "fly"
    await cluster.failover()          # flyctl postgres failover; a FailoverReport
    await cluster.rejoin("m1")        # flyctl machine start: Fly's own HA makes it a replica
    await cluster.kill_machine(id)    # the monthly drill's "kill primary machine"

Fly makes and removes its clusters itself (`flyctl postgres create`), so `up` and `down` are
usage errors that say so.

What each operation sends (argv after the flyctl path; every call runs with a timeout):

=========================  ==========================================================
status()                   ``status -a APP --json`` then ``machine list -a APP --json``
failover()                 ``machine list``, ``postgres failover -a APP``, ``machine list``
kill_machine(id)           ``machine kill ID -a APP``
resize(id, size)           ``machine update ID --vm-size SIZE -a APP --yes``
volumes()                  ``volumes list -a APP --json``
extend_volume(id, n)       ``volumes extend ID --size N -a APP --yes --json``
snapshot_create(vol)       ``volumes snapshots create VOL -a APP --json``
snapshots(vol)             ``volumes snapshots list VOL --json``
machine_start(id)          ``machine start ID -a APP``
restore_from_snapshot()    ``postgres create --name NEW --snapshot-id SNAP [...]``
set_secret(app, k, v)      ``secrets import -a APP`` with ``K=V`` on stdin (never argv)
logs(errors_only)          ``logs -a APP --no-tail`` (ERROR lines kept client-side)
connect_argv()             returns ``[flyctl, postgres, connect, -a, APP]`` (not run)
=========================  ==========================================================

Where the runbook's spelling is older than flyctl's, flyctl's current one is sent:
``volumes extend --size`` (runbook: ``--size-gb``), ``volumes snapshots`` (runbook:
``snapshot``, an alias) and ``postgres create --name N --snapshot-id S`` (runbook: a positional
name and ``--snapshot``). ``secrets set K=V`` would put the value in the process list, so
``secrets import`` reads it from stdin instead.

Failures (flyctl missing, a non-zero exit, a timeout, output that is not the JSON promised)
become `ClusterError` whose text has passed through `redact` and has every secret value this
object has handled masked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cardmint.cluster.engine import (
    ClusterStatus,
    DownReport,
    FailoverReport,
    LogQuery,
    LogReport,
    NodeStatus,
    RejoinReport,
    ReplicaReport,
    UpReport,
)
from cardmint.dsn import redact
from cardmint.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from cardmint.config import Settings

_FLY_MACHINES = ("{what} is for the local engine; this cluster runs fly: use flyctl for it "
                 "on Fly (`flyctl machine clone` / `flyctl machine destroy`)")
DEFAULT_TIMEOUT_S = 60.0
REJOIN_TIMEOUT_S = 300.0  # a machine start, then Fly's HA re-syncing it as a replica
REJOIN_POLL_S = 2.0
PG_PORT = 5432
_MASK = "***"
# flyctl identifiers: app names, machine/volume/snapshot ids, VM sizes, regions.
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SECRET_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class MachineResize:
    machine: str
    was: str  # primary | replica
    duration_s: float


@dataclass
class FlyResizeReport:
    provider: str
    app: str
    vm_size: str
    primary_before: str
    primary_after: str
    switchover: FailoverReport | None
    duration_s: float
    machines: list[MachineResize] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[..., RunResult]


def subprocess_runner(argv: Sequence[str], *, input: str | None, timeout: float,
                      env: Mapping[str, str] | None) -> RunResult:
    """Run one flyctl command; raise `subprocess.TimeoutExpired` / `OSError` as they come."""
    proc = subprocess.run(list(argv), input=input if input is not None else "",
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else None, check=False)
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


class FlyCluster:
    """One Fly Postgres app, driven through flyctl. Methods are async like LocalCluster's;
    each flyctl call runs in a worker thread."""

    provider = "fly"

    def __init__(self, app: str, *, flyctl: str = "flyctl", runner: Runner | None = None,
                 env: Mapping[str, str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, settings: Settings | None = None) -> None:
        self.app = _ident(app, "app")
        self.settings = settings
        self.flyctl = flyctl
        self.runner: Runner = runner or subprocess_runner
        self.env = {**os.environ, **env} if env is not None else None
        self.timeout_s = timeout_s
        self._secrets: set[str] = set()  # values to mask in anything we raise

    @classmethod
    def from_settings(cls, settings: Settings) -> FlyCluster:
        """The app named by CARDMINT_FLY_APP, through CARDMINT_FLYCTL."""
        return cls(settings.fly_app, flyctl=settings.flyctl, settings=settings)

    @property
    def home(self) -> str:
        return f"fly app {self.app}"

    # -- what Fly does itself ----------------------------------------------------------

    async def up(self, replicas: int | None = None, sync: bool | None = None) -> UpReport:
        raise UsageError(f"Fly creates its Postgres clusters itself: `flyctl postgres create "
                         f"--name {self.app}`; `cardmint cluster status` then shows it")

    async def down(self, purge: bool = False) -> DownReport:
        raise UsageError(f"a Fly cluster is stopped or destroyed with flyctl (`flyctl apps "
                         f"destroy {self.app}`), never by `cardmint cluster down`")

    async def add_replica(self, sync: bool = False) -> ReplicaReport:
        raise UsageError(_FLY_MACHINES.format(what="add-replica"))

    async def remove_replica(self, name: str) -> ReplicaReport:
        raise UsageError(_FLY_MACHINES.format(what="remove-replica"))

    async def pooler(self, action: str) -> dict[str, Any]:
        raise UsageError("pooler is for the local engine; this cluster runs fly: Fly Postgres "
                         "has its own PgBouncer (`flyctl postgres config`)")

    # -- the one way flyctl is run ---------------------------------------------------

    async def _run(self, *args: str, stdin: str | None = None, want_json: bool = False,
                   timeout_s: float | None = None) -> Any:
        argv = [self.flyctl, *args]
        shown = self._clean(" ".join(args))
        timeout = timeout_s or self.timeout_s
        try:
            result = await asyncio.to_thread(self.runner, argv, input=stdin, timeout=timeout,
                                             env=self.env)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"flyctl {shown} timed out after {timeout:g} s") from None
        except FileNotFoundError:
            raise ClusterError(f"flyctl not found ({self.flyctl!r}): install it from "
                               "https://fly.io/docs/flyctl/install/ or put it on PATH") from None
        except OSError as exc:
            raise ClusterError(f"flyctl {shown} could not run: "
                               f"{self._clean(exc.strerror or str(exc))}") from None
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip() or "no output")
            raise ClusterError(f"flyctl {shown} failed (exit {result.returncode}): "
                               f"{self._clean(detail)[-2000:]}")
        if not want_json:
            return result.stdout
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            raise ClusterError(f"flyctl {shown} did not answer JSON: "
                               f"{self._clean(result.stdout.strip())[:200]!r}") from None

    def _clean(self, text: str) -> str:
        """Redact DSN passwords and every secret value this object has handled."""
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, _MASK)
        return redact(text)

    # -- status ------------------------------------------------------------------------

    async def machines(self) -> list[dict[str, Any]]:
        out = await self._run("machine", "list", "-a", self.app, "--json", want_json=True)
        if not isinstance(out, list):
            raise ClusterError("flyctl machine list did not answer a JSON list")
        return out

    async def status(self) -> ClusterStatus:
        """The contract of `cluster status --json`, one node per machine. flyctl reports no
        timeline, LSN or lag, so those are None (ask the nodes over SQL for them)."""
        app = await self._run("status", "-a", self.app, "--json", want_json=True)
        machines = await self.machines()
        app = app if isinstance(app, dict) else {}
        return ClusterStatus(
            provider=self.provider, home=self.home,
            status=app.get("Status") or app.get("status"),
            sync=None,  # flyctl does not say; ask the primary over SQL
            nodes=[_node(m) for m in machines],
            extra={"app": self.app, "hostname": app.get("Hostname") or app.get("hostname")})

    # -- failover and machines -----------------------------------------------------------

    async def failover(self, to: str | None = None, *, kind: str = "failover") -> FailoverReport:
        """`flyctl postgres failover`: Fly's HA picks the new primary and keeps the old one
        as a replica (there is no fencing for us to do). It takes no target."""
        if to is not None:
            raise UsageError(f"flyctl postgres failover chooses the new primary itself; "
                             f"leave out --to (asked for {to})")
        began = time.monotonic()
        before_list = await self.machines()
        before = primary_id(before_list)
        listed = time.monotonic()
        output = await self._run("postgres", "failover", "-a", self.app,
                                 timeout_s=max(self.timeout_s, 300.0))
        ran = time.monotonic()
        machines = await self.machines()
        after = primary_id(machines)
        if after is None or after == before:
            raise ClusterError(f"flyctl postgres failover returned, but the primary is still "
                               f"{before or 'unknown'}: {self._clean(output.strip())[-500:]}")
        done = time.monotonic()
        return FailoverReport(
            kind=kind, old_primary=before or "unknown", new_primary=after,
            old_primary_was_running=any(m.get("id") == before and m.get("state") == "started"
                                        for m in before_list),
            stop_mode=None, fenced=False, timeline=None, lsn=None,
            not_streaming=[m["id"] for m in machines
                           if m.get("id") != after and m.get("state") != "started"],
            timings_s={"list": round(listed - began, 4), "flyctl": round(ran - listed, 4),
                       "confirm": round(done - ran, 4)},
            duration_s=round(done - began, 4))

    async def switchover(self, to: str | None = None) -> FailoverReport:
        """On Fly the planned change of primary is the same flyctl command."""
        return await self.failover(to, kind="switchover")

    async def rejoin(self, name: str) -> RejoinReport:
        """Start a stopped machine; Fly's HA brings it back as a replica. Waits (bounded)
        until it runs as one."""
        began = time.monotonic()
        await self.machine_start(name)
        deadline = began + REJOIN_TIMEOUT_S
        while True:
            machines = await self.machines()
            mine = next((m for m in machines if m.get("id") == name), None)
            if mine is None:
                raise UsageError(f"no machine {name} in {self.app}")
            if mine.get("state") == "started" and role_of(mine) == "replica":
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"machine {name} is not a running replica "
                                   f"{REJOIN_TIMEOUT_S:.0f} s after it was started")
            await asyncio.sleep(REJOIN_POLL_S)
        return RejoinReport(node=name, primary=primary_id(machines) or "unknown",
                            method="machine start", fallback_reason=None, set_aside=None,
                            streaming=True, sync_names=None,
                            duration_s=round(time.monotonic() - began, 3))

    async def machine_start(self, machine_id: str) -> dict[str, Any]:
        await self._run("machine", "start", _ident(machine_id, "machine id"), "-a", self.app)
        return {"machine": machine_id, "started": True}

    async def kill_machine(self, machine_id: str) -> dict[str, Any]:
        await self._run("machine", "kill", _ident(machine_id, "machine id"), "-a", self.app)
        return {"machine": machine_id, "killed": True}

    async def resize_machine(self, machine_id: str, vm_size: str) -> dict[str, Any]:
        await self._run("machine", "update", _ident(machine_id, "machine id"),
                        "--vm-size", _ident(vm_size, "vm size"), "-a", self.app, "--yes",
                        timeout_s=max(self.timeout_s, 300.0))
        return {"machine": machine_id, "vm_size": vm_size}

    async def resize(self, *, memory: str | None = None, cpu: int | None = None,
                     vm_size: str | None = None) -> FlyResizeReport:
        """The runbook's vertical scaling without a write outage beyond one failover:
        replicas first, then `postgres failover` so the old primary is a replica when its
        machine restarts with the new size."""
        if vm_size is None or memory is not None or cpu is not None:
            raise UsageError("on Fly, resize takes --vm-size (e.g. performance-2x) only")
        _ident(vm_size, "vm size")
        began = time.monotonic()
        machines = await self.machines()
        primary = primary_id(machines)
        if primary is None:
            raise ClusterError(f"{self.app} has no running primary: nothing resized")
        order = [m["id"] for m in machines if m.get("id") != primary] + [primary]
        report = FlyResizeReport(provider=self.provider, app=self.app, vm_size=vm_size,
                                 primary_before=primary, primary_after=primary,
                                 switchover=None, duration_s=0.0)
        for machine_id in order:
            if machine_id == primary and len(order) > 1:
                report.switchover = await self.failover(kind="switchover")
                report.primary_after = report.switchover.new_primary
            step_began = time.monotonic()
            await self.resize_machine(machine_id, vm_size)
            report.machines.append(MachineResize(
                machine_id, "primary" if machine_id == primary else "replica",
                round(time.monotonic() - step_began, 3)))
        report.duration_s = round(time.monotonic() - began, 3)
        return report

    # -- volumes and snapshots -------------------------------------------------------------

    async def volumes(self) -> list[dict[str, Any]]:
        out = await self._run("volumes", "list", "-a", self.app, "--json", want_json=True)
        if not isinstance(out, list):
            raise ClusterError("flyctl volumes list did not answer a JSON list")
        return out

    async def extend_volume(self, volume_id: str, size_gb: int) -> dict[str, Any]:
        if isinstance(size_gb, bool) or not isinstance(size_gb, int) or size_gb < 1:
            raise UsageError(f"size_gb must be a whole number of GB, 1 or more: {size_gb!r}")
        out = await self._run("volumes", "extend", _ident(volume_id, "volume id"),
                              "--size", str(size_gb), "-a", self.app, "--yes", "--json",
                              want_json=True)
        return out if isinstance(out, dict) else {"id": volume_id, "size_gb": size_gb}

    async def snapshot_create(self, volume_id: str) -> dict[str, Any]:
        out = await self._run("volumes", "snapshots", "create", _ident(volume_id, "volume id"),
                              "-a", self.app, "--json", want_json=True)
        return out if isinstance(out, dict) else {"volume": volume_id}

    async def snapshots(self, volume_id: str) -> list[dict[str, Any]]:
        out = await self._run("volumes", "snapshots", "list", _ident(volume_id, "volume id"),
                              "--json", want_json=True)
        if not isinstance(out, list):
            raise ClusterError("flyctl volumes snapshots list did not answer a JSON list")
        return out

    async def restore_from_snapshot(self, new_app: str, snapshot_id: str, *,
                                    region: str | None = None, org: str | None = None,
                                    vm_size: str | None = None,
                                    volume_size_gb: int | None = None) -> dict[str, Any]:
        """A new Postgres app whose volume starts from the snapshot. The new app's
        connection string is printed by flyctl once: it is not returned, and the caller sets
        DATABASE_URL with `set_secret`."""
        args = ["postgres", "create", "--name", _ident(new_app, "app"),
                "--snapshot-id", _ident(snapshot_id, "snapshot id")]
        if region:
            args += ["--region", _ident(region, "region")]
        if org:
            args += ["--org", _ident(org, "org")]
        if vm_size:
            args += ["--vm-size", _ident(vm_size, "vm size")]
        if volume_size_gb:
            args += ["--volume-size", str(int(volume_size_gb))]
        await self._run(*args, timeout_s=max(self.timeout_s, 900.0))
        return {"app": new_app, "snapshot": snapshot_id}

    # -- secrets, logs, connect ----------------------------------------------------------

    async def set_secret(self, app: str, key: str, value: str) -> dict[str, Any]:
        """Set one secret on `app` (the application, not necessarily the database app). The
        value goes on stdin to `flyctl secrets import`, so no process list ever shows it."""
        if not _SECRET_KEY.match(key):
            raise UsageError(f"secret name {key!r} must be letters, digits and underscores")
        if not value or "\n" in value or "\r" in value or "\0" in value:
            raise UsageError(f"secret {key} must be one non-empty line")
        self._secrets.add(value)
        await self._run("secrets", "import", "-a", _ident(app, "app"), stdin=f"{key}={value}\n")
        return {"app": app, "key": key, "set": True}

    async def logs(self, query: LogQuery) -> LogReport:
        """The app's recent log lines (redacted); with `errors`, those naming ERROR."""
        if query.node or query.since:
            raise UsageError("on Fly, cluster logs takes --errors and --lines only "
                             "(`flyctl logs -a APP` follows)")
        out = await self._run("logs", "-a", self.app, "--no-tail")
        lines = [self._clean(line) for line in out.splitlines()]
        lines = [line for line in lines if "ERROR" in line] if query.errors else lines
        return LogReport(lines=lines[-query.lines:] if query.lines > 0 else lines)

    def follow_logs(self, query: LogQuery) -> AsyncIterator[dict[str, Any]]:
        raise UsageError("on Fly, cluster logs takes --errors and --lines only "
                         f"(`flyctl logs -a {self.app}` follows)")

    def connect_argv(self) -> list[str]:
        """What to exec for an interactive psql on the primary (`cardmint cluster psql`)."""
        return [self.flyctl, "postgres", "connect", "-a", self.app]

    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]:
        """`cluster connect` on Fly: flyctl's own psql session on the primary."""
        if name not in (None, "primary"):
            raise UsageError("flyctl postgres connect reaches the primary only; use "
                             f"`flyctl ssh console -a {self.app} -s` for machine {name}")
        if args:
            raise UsageError("flyctl postgres connect takes no psql arguments")
        return self.connect_argv(), {}


# -- mapping flyctl's JSON to the status contract -----------------------------------------

def role_of(machine: Mapping[str, Any]) -> str:
    """Fly Postgres reports each machine's role in its "role" health check's output (and
    flex images in the machine metadata)."""
    for check in machine.get("checks") or []:
        if check.get("name") == "role" and check.get("output"):
            return str(check["output"]).strip()
    meta = (machine.get("config") or {}).get("metadata") or {}
    return str(meta.get("role") or "unknown")


def _node(machine: Mapping[str, Any]) -> NodeStatus:
    state = machine.get("state")
    return NodeStatus(
        name=str(machine.get("id")), role=role_of(machine), host=machine.get("private_ip"),
        port=PG_PORT, running=state == "started", state=state,
        extra={"machine_name": machine.get("name"), "region": machine.get("region")})


def primary_id(machines: list[dict[str, Any]]) -> str | None:
    for m in machines:
        if role_of(m) == "primary" and m.get("state") == "started":
            return m.get("id")
    return None


def _ident(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise UsageError(f"not a valid {what}: {value!r}")
    return value
