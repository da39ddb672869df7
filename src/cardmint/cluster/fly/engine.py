"""The Fly engine: the runbook's flyctl commands behind the engines' operations.

With ``CARDMINT_PROVIDER=fly`` and ``CARDMINT_FLY_APP=cardmint-db`` the `cardmint cluster`
commands drive a Fly Postgres app (`cluster.provider` chooses). What each operation sends
(argv after the flyctl path), and the bound it runs within (`waits.Waits`):

=========================  ============================================================
status()                   ``status -a APP --json``, ``machine list -a APP --json``
failover()                 ``machine list``, ``postgres failover -a APP`` (~510 s), list
rejoin(id)                 ``machine start ID -a APP``, then lists until it is a replica
stop_machine(id)           ``machine stop ID --signal SIGKILL -a APP`` (the drill)
resize_machine(id, size)   ``machine update ID --vm-size S --wait-timeout 300 -a APP --yes``
volumes()                  ``volumes list -a APP --json``
extend_volume(id, n)       ``volumes extend ID --size N -a APP --yes`` (text: restart?)
snapshot_create(vol)       ``volumes snapshots create VOL -a APP`` (text: no id)
snapshots(vol)             ``volumes snapshots list VOL -a APP --json``
restore(spec)              ``postgres create --name ... --snapshot-id ...`` (bound ~80 min)
stage_secret(app, k, v)    ``secrets import --stage -a APP``, ``K="V"`` on stdin
deploy_secrets(app)        ``secrets deploy -a APP`` (bound from the app's machine count)
proxied(app)               ``proxy 0:5432 -a APP --watch-stdin`` while a block runs
logs(query)                ``logs -a APP --no-tail``
connect_argv()             ``[flyctl, postgres, connect, -a, APP]`` (exec'd, not run)
=========================  ============================================================

Where the runbook's spelling is older than flyctl's, flyctl's current one is sent
(``volumes extend --size``, ``volumes snapshots``, ``postgres create --name
--snapshot-id``), and ``secrets import`` replaces ``secrets set K=V``, which would put the
value in the process list. Machines, roles and the quorum rule: `machines.py`,
`roles.py`; how flyctl is run: `flyctl.py`; flyctl's waits: `waits.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
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
from cardmint.cluster.fly import machines as parse
from cardmint.cluster.fly import proxy, restore, roles
from cardmint.cluster.fly.flyctl import Flyctl, FlyctlTimeout, Runner, ident
from cardmint.cluster.fly.machines import Machine, Snapshot, Volume
from cardmint.cluster.fly.secrets import import_line
from cardmint.cluster.fly.waits import Waits
from cardmint.errors import ClusterError, UsageError

if TYPE_CHECKING:
    from cardmint.config import Settings

_FLY_MACHINES = ("{what} is for the local engine; this cluster runs fly: use flyctl for it "
                 "on Fly (`flyctl machine clone` / `flyctl machine destroy`)")
PG_PORT = 5433  # Postgres itself on each machine; 5432 is the proxy to the primary
PROXY_PORT = 5432
_RESTART_NEEDED = "You will need to stop and start your Machine"


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


@dataclass(frozen=True)
class Extended:
    volume: str
    size_gb: int
    needs_restart: bool  # flyctl: the file system grows only after a stop and start


class FlyCluster:
    """One Fly Postgres app, driven through flyctl. Methods are async like the other
    engines'; each flyctl call runs in a worker thread."""

    provider = "fly"

    def __init__(self, app: str, *, flyctl: str = "flyctl", runner: Runner | None = None,
                 env: Mapping[str, str] | None = None, timeout_s: float | None = None,
                 waits: Waits | None = None, settings: Settings | None = None) -> None:
        self.app = ident(app, "app")
        self.settings = settings
        self.waits = waits or Waits()
        if timeout_s is not None:
            self.waits = Waits(**{**asdict(self.waits), "call_s": timeout_s})
        self.flyctl = Flyctl(flyctl, runner=runner, env=env, timeout_s=self.waits.call_s)

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

    # -- status ------------------------------------------------------------------------

    async def machines(self, app: str | None = None) -> list[Machine]:
        return parse.machines(await self.flyctl.run(
            "machine", "list", "-a", ident(app or self.app, "app"), "--json", want_json=True))

    async def app_status(self, app: str | None = None) -> dict[str, Any]:
        doc = await self.flyctl.run("status", "-a", ident(app or self.app, "app"), "--json",
                                    want_json=True)
        return doc if isinstance(doc, dict) else {}

    async def app_exists(self, app: str) -> bool:
        """Whether an app of that name is there (`status` fails with "Could not find
        App" when it is not)."""
        _, result = await self.flyctl.result("status", "-a", ident(app, "app"), "--json",
                                             check=False)
        if result.returncode == 0:
            return True
        said = (result.stderr + result.stdout).lower()
        if "could not find app" in said or "could not resolve app" in said:  # new, old API
            return False
        raise ClusterError(f"flyctl status -a {app} failed (exit {result.returncode}): "
                           f"{self.flyctl.error_text(result)}")

    async def status(self) -> ClusterStatus:
        """The contract of `cluster status --json`, one node per machine. flyctl reports
        no timeline, LSN or lag, so those are None (ask the nodes over SQL for them)."""
        app = await self.app_status()
        machines = await self.machines()
        warnings = []
        claimed = roles.primaries(machines)
        if len(claimed) > 1:
            warnings.append(roles.split_brain(claimed))
        elif not claimed:
            warnings.append("no running machine passes its role check as primary")
        quorum = roles.quorum_refusal(machines, "high availability")
        if quorum:
            warnings.append(quorum)
        return ClusterStatus(
            provider=self.provider, home=self.home,
            status=app.get("Status"), sync=None,  # flyctl does not say; ask over SQL
            nodes=[_node(m) for m in machines],
            extra={"app": self.app, "hostname": app.get("Hostname"),
                   "manager": machines[0].manager if machines else None,
                   "proxy_port": PROXY_PORT, "warnings": warnings})

    # -- failover and machines -----------------------------------------------------------

    async def failover(self, to: str | None = None, *, kind: str = "failover") -> FailoverReport:
        """`flyctl postgres failover`: Fly picks the new primary and keeps the old one as
        a replica. Refused up front where flyctl would refuse or fail half way."""
        if to is not None:
            raise UsageError(f"flyctl postgres failover chooses the new primary itself; "
                             f"leave out --to (asked for {to})")
        began = time.monotonic()
        before_list = await self.machines()
        before = self._ready_for_failover(before_list, "failover")
        listed = time.monotonic()
        try:
            output = await self.flyctl.run("postgres", "failover", "-a", self.app,
                                           timeout_s=self.waits.failover_s)
        except FlyctlTimeout as exc:
            raise ClusterError(
                f"{exc}: flyctl may have stopped {before} and be half way through; see "
                f"`cardmint cluster status`, and if no machine is primary start the old one "
                f"with `flyctl machine start {before} -a {self.app}`") from None
        ran = time.monotonic()
        machines = await self.machines()
        after = roles.primary_id(machines)
        if after is None or after == before:
            raise ClusterError(f"flyctl postgres failover returned, but the primary is "
                               f"{after or 'none'} (was {before}): "
                               f"{self.flyctl.clean(output.strip())[-500:]}")
        done = time.monotonic()
        return FailoverReport(
            kind=kind, old_primary=before, new_primary=after, old_primary_was_running=True,
            stop_mode="flyctl postgres failover", fenced=False, timeline=None, lsn=None,
            not_streaming=[m.id for m in machines
                           if m.id != after and roles.role_of(m) != roles.REPLICA],
            timings_s={"list": round(listed - began, 4), "flyctl": round(ran - listed, 4),
                       "confirm": round(done - ran, 4)},
            duration_s=round(done - began, 4))

    def _ready_for_failover(self, machines: list[Machine], what: str) -> str:
        """The primary's id, if flyctl's failover can run on `machines`; else why not."""
        primary = roles.primary_id(machines)
        if primary is None:
            raise ClusterError(f"{self.app} has no machine whose role check passes as "
                               f"primary: nothing to fail over from ({what} refused)")
        refusal = roles.quorum_refusal(machines, what)
        if refusal:
            raise UsageError(refusal)
        if not any(m.id != primary and m.running and m.healthy
                   and roles.role_of(m) == roles.REPLICA for m in machines):
            raise ClusterError(f"{self.app} has no running replica whose health checks all "
                               f"pass: flyctl would find no candidate ({what} refused)")
        return primary

    async def switchover(self, to: str | None = None) -> FailoverReport:
        """On Fly the planned change of primary is the same flyctl command."""
        return await self.failover(to, kind="switchover")

    async def rejoin(self, name: str) -> RejoinReport:
        """Start a stopped machine; Fly's cluster manager brings it back as a replica
        (a returning flex primary is a zombie first). Waits, bounded, until its role
        check passes as replica."""
        began = time.monotonic()
        current = next((m for m in await self.machines() if m.id == name), None)
        if current is None:
            raise UsageError(f"no machine {name} in {self.app}")
        if not current.running:
            await self.start_machine(name)
        deadline = began + self.waits.rejoin_s
        while True:
            machines = await self.machines()
            mine = next((m for m in machines if m.id == name), None)
            if mine is not None and mine.running and roles.role_of(mine) == roles.REPLICA:
                break
            if time.monotonic() > deadline:
                seen = roles.role_check(mine) if mine else "gone"
                raise ClusterError(f"machine {name} is not a running replica "
                                   f"{self.waits.rejoin_s:g} s after it was started "
                                   f"(role check {seen})")
            await asyncio.sleep(self.waits.poll_s)
        return RejoinReport(node=name, primary=roles.primary_id(machines) or "unknown",
                            method="machine start", fallback_reason=None, set_aside=None,
                            streaming=True, sync_names=None,
                            duration_s=round(time.monotonic() - began, 3))

    async def start_machine(self, machine_id: str) -> None:
        await self.flyctl.run("machine", "start", ident(machine_id, "machine id"),
                              "-a", self.app)

    async def stop_machine(self, machine_id: str, signal: str = "SIGKILL") -> None:
        """Stop a machine so it stays stopped: `machine kill` would not do (Fly Postgres
        machines have restart policy `always`, so flyd starts a killed one again)."""
        await self.flyctl.run("machine", "stop", ident(machine_id, "machine id"),
                              "--signal", ident(signal, "signal"), "-a", self.app)

    async def resize_machine(self, machine_id: str, vm_size: str) -> None:
        try:
            await self.flyctl.run(
                "machine", "update", ident(machine_id, "machine id"),
                "--vm-size", ident(vm_size, "vm size"),
                "--wait-timeout", str(self.waits.update_wait_s), "-a", self.app, "--yes",
                timeout_s=self.waits.update_s)
        except FlyctlTimeout as exc:
            raise ClusterError(f"{exc}: machine {machine_id} may be restarting with its new "
                               "size; see `cardmint cluster status`") from None

    async def resize(self, *, memory: str | None = None, cpu: int | None = None,
                     vm_size: str | None = None) -> FlyResizeReport:
        """The runbook's vertical scaling with one failover's outage: replicas first, then
        `postgres failover`, then the old primary, now a replica. Checked up front, so a
        cluster flyctl cannot fail over is refused before any machine changes."""
        if vm_size is None or memory is not None or cpu is not None:
            raise UsageError("on Fly, resize takes --vm-size (e.g. performance-2x) only")
        ident(vm_size, "vm size")
        began = time.monotonic()
        machines = await self.machines()
        primary = self._ready_for_failover(machines, "resize")
        order = [m.id for m in machines if m.id != primary] + [primary]
        report = FlyResizeReport(provider=self.provider, app=self.app, vm_size=vm_size,
                                 primary_before=primary, primary_after=primary,
                                 switchover=None, duration_s=0.0)
        for machine_id in order:
            if machine_id == primary:
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

    async def volumes(self) -> list[Volume]:
        return parse.volumes(await self.flyctl.run("volumes", "list", "-a", self.app,
                                                   "--json", want_json=True))

    async def extend_volume(self, volume_id: str, size_gb: int) -> Extended:
        """Grow a volume. flyctl says only in its text (not with --json) whether the
        machine must be stopped and started for the file system to grow."""
        if isinstance(size_gb, bool) or not isinstance(size_gb, int) or size_gb < 1:
            raise UsageError(f"size_gb must be a whole number of GB, 1 or more: {size_gb!r}")
        out = await self.flyctl.run("volumes", "extend", ident(volume_id, "volume id"),
                                    "--size", str(size_gb), "-a", self.app, "--yes")
        now = next((v for v in await self.volumes() if v.id == volume_id), None)
        return Extended(volume_id, now.size_gb if now else size_gb, _RESTART_NEEDED in out)

    async def snapshot_create(self, volume_id: str) -> None:
        """Schedule a snapshot. flyctl prints `Scheduled to snapshot volume ...` whatever
        --json says, and learns no snapshot id: `snapshots` shows it once it is there."""
        await self.flyctl.run("volumes", "snapshots", "create", ident(volume_id, "volume id"),
                              "-a", self.app)

    async def snapshots(self, volume_id: str) -> list[Snapshot]:
        """Oldest first, as flyctl sorts them. -a is always sent: without it flyctl takes
        the app from FLY_APP or a fly.toml in the working directory."""
        return parse.snapshots(volume_id, await self.flyctl.run(
            "volumes", "snapshots", "list", ident(volume_id, "volume id"), "-a", self.app,
            "--json", want_json=True))

    async def restore(self, spec: restore.RestoreSpec) -> restore.Restored:
        """A new Postgres app from a snapshot; its superuser password is returned as a
        secret and masked in every message from here on."""
        began = time.monotonic()
        bound = self.waits.restore_s(spec.machines)
        try:
            out = await self.flyctl.run(*spec.argv(), timeout_s=bound)
        except ClusterError as exc:
            raise ClusterError(f"{exc}. {restore.cut_off_advice(spec.new_app)}") from None
        password = restore.password_in(out)
        self.flyctl.hide(password.get_secret_value())
        return restore.Restored(spec.new_app, "postgres", password,
                                round(time.monotonic() - began, 3))

    def proxied(self, app: str) -> AbstractAsyncContextManager[int]:
        """A loopback port to `app`'s Postgres (through its proxy port) for a block."""
        return proxy.proxied(self.flyctl, app, timeout_s=self.waits.proxy_s)

    # -- secrets, logs, connect ----------------------------------------------------------

    async def stage_secret(self, app: str, key: str, value: str) -> None:
        """Store KEY on `app` without restarting anything (`secrets import --stage`); the
        value goes on stdin, quoted so that flyctl reads it back whole."""
        line = import_line(key, value)
        self.flyctl.hide(value)
        await self.flyctl.run("secrets", "import", "--stage", "-a", ident(app, "app"),
                              stdin=line)

    async def deploy_secrets(self, app: str) -> int:
        """Restart `app`'s machines with its staged secrets (`secrets deploy`), within
        the longest rolling restart flyctl may run; the number of machines. An app with
        no machines has nothing to restart: the next deploy takes the secrets."""
        count = len(await self.machines(app))
        if count == 0:
            return 0
        try:
            await self.flyctl.run("secrets", "deploy", "-a", ident(app, "app"),
                                  timeout_s=self.waits.deploy_s(count))
        except ClusterError as exc:
            raise ClusterError(f"{exc}. Some machines of {app} may still run with the old "
                               f"secrets: finish with `flyctl secrets deploy -a {app}`") from None
        return count

    async def logs(self, query: LogQuery) -> LogReport:
        """The app's recent log lines (redacted); with `errors`, those naming ERROR.
        `flyctl logs --no-tail` polls an empty buffer forever, so a run cut off at its
        bound means no recent lines."""
        if query.node or query.since:
            raise UsageError("on Fly, cluster logs takes --errors and --lines only "
                             "(`flyctl logs -a APP` follows)")
        try:
            out = await self.flyctl.run("logs", "-a", self.app, "--no-tail",
                                        timeout_s=self.waits.logs_s)
        except FlyctlTimeout:
            out = ""
        lines = [self.flyctl.clean(line) for line in out.splitlines()]
        lines = [line for line in lines if "ERROR" in line] if query.errors else lines
        return LogReport(lines=lines[-query.lines:] if query.lines > 0 else lines)

    def follow_logs(self, query: LogQuery) -> AsyncIterator[dict[str, Any]]:
        raise UsageError("on Fly, cluster logs takes --errors and --lines only "
                         f"(`flyctl logs -a {self.app}` follows)")

    def connect_argv(self) -> list[str]:
        """What to exec for an interactive psql on the primary (`cardmint cluster psql`)."""
        return [self.flyctl.path, "postgres", "connect", "-a", self.app]

    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]:
        """`cluster connect` on Fly: flyctl's own psql session on the primary."""
        if name not in (None, "primary"):
            raise UsageError("flyctl postgres connect reaches the primary only; use "
                             f"`flyctl ssh console -a {self.app} -s` for machine {name}")
        if args:
            raise UsageError("flyctl postgres connect takes no psql arguments")
        return self.connect_argv(), {}


def _node(machine: Machine) -> NodeStatus:
    return NodeStatus(
        name=machine.id, role=roles.role_of(machine), host=machine.private_ip,
        port=PG_PORT, running=machine.running, state=machine.state,
        extra={"machine_name": machine.name, "region": machine.region,
               "role_check": roles.role_check(machine), "healthy": machine.healthy})
