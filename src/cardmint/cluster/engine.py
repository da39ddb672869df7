"""What every engine answers, and the reports it answers with.

An engine is the thing that runs the cluster's PostgreSQL nodes: `local` (servers on this
machine), `patroni` (the same servers run by Patroni) or `fly` (a Fly Postgres app through
flyctl). `cluster.provider.open_cluster` picks one; commands call the methods below and
never ask which engine they have. What an engine cannot do raises a `UsageError` that
says what to run instead, so a face only renders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cardmint.config import Settings

if TYPE_CHECKING:
    from cardmint.cluster.pg.admin import NodeAdmin
    from cardmint.cluster.state import ClusterState, Node

# -- reports ----------------------------------------------------------------------------


@dataclass
class UpReport:
    created: bool
    adopted: bool
    started: list[str] = field(default_factory=list)
    cleaned: bool = False
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Stopped:
    """One process `down` stopped, and how (fast, immediate, SIGTERM, SIGKILL...)."""

    node: str
    pid: int
    mode: str


@dataclass
class DownReport:
    stopped: list[Stopped] = field(default_factory=list)
    purged: bool = False
    kept: list[str] = field(default_factory=list)  # what a purge leaves on purpose

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NodeStatus:
    """One node as it reports itself (the `cluster status --json` contract)."""

    name: str
    role: str  # primary | replica (a fenced node is a replica-to-be)
    host: str | None
    port: int | None
    running: bool
    pid: int | None = None
    timeline: int | None = None
    lsn: str | None = None
    lag_bytes: int | None = None
    lag_s: float | None = None
    state: str | None = None  # accepting writes | streaming | recovering | stopped | ...
    error: str | None = None
    # the primary's view of its standbys: application_name, state, sync_state
    replicas: list[dict[str, Any]] | None = None
    lsn_value: int | None = None  # `lsn` as a number, to compute lag; not in the contract
    extra: dict[str, Any] = field(default_factory=dict)  # what one engine adds (patroni...)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["lsn_value"], out["extra"]
        if self.replicas is None:
            del out["replicas"]
        return {**out, **self.extra}


@dataclass
class ClusterStatus:
    provider: str
    home: str
    status: str | None
    sync: bool | None
    nodes: list[NodeStatus]
    extra: dict[str, Any] = field(default_factory=dict)  # leader, dcs, app...

    def node(self, name: str) -> NodeStatus | None:
        return next((n for n in self.nodes if n.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "home": self.home, "status": self.status,
                "sync": self.sync, **self.extra, "nodes": [n.to_dict() for n in self.nodes]}


@dataclass
class FailoverReport:
    kind: str  # failover | switchover
    old_primary: str
    new_primary: str
    old_primary_was_running: bool
    stop_mode: str | None  # how the old primary was stopped, if it ran
    fenced: bool
    timeline: int | None
    lsn: str | None  # the new primary's WAL position right after promotion
    candidates: dict[str, str | None] = field(default_factory=dict)
    leftovers_killed: int = 0  # processes of a killed postmaster, SIGKILLed as fencing
    repointed: list[str] = field(default_factory=list)
    not_streaming: list[str] = field(default_factory=list)
    sync_names: str | None = None
    final_lsn: str | None = None  # switchover: the old primary's shutdown checkpoint
    rejoin: RejoinReport | None = None
    timings_s: dict[str, float] = field(default_factory=dict)  # where the time went
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RejoinReport:
    node: str
    primary: str
    method: str  # rewind | basebackup | restart | machine start | patroni ...
    fallback_reason: str | None
    set_aside: str | None  # the old directory, kept for writes only it may have had
    streaming: bool
    sync_names: str | None  # synchronous_standby_names set on the primary afterwards
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReplicaReport:
    action: str  # added | removed
    node: str
    primary: str
    port: int
    streaming: bool
    slot: str
    sync_names: str | None  # synchronous_standby_names on the primary afterwards
    duration_s: float
    drained: bool | None = None  # removal: no application read was left on it
    slot_dropped: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LogQuery:
    node: str | None = None
    errors: bool = False
    since: str | None = None  # 90s, 5m, 1h, 2d or ISO 8601
    lines: int = 200  # the last N (0: all)


@dataclass
class LogReport:
    """Server log entries (engines that read jsonlog) or plain lines (flyctl logs)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.lines is not None:
            return {"lines": self.lines, "count": len(self.lines)}
        return {"entries": self.entries, "count": len(self.entries)}


class Report(Protocol):
    """A typed result that renders as the command's JSON document."""

    def to_dict(self) -> dict[str, Any]: ...


# -- the protocol -----------------------------------------------------------------------


class Cluster(Protocol):
    """The operations every engine answers (or refuses with a UsageError saying what to
    run instead)."""

    provider: str

    async def up(self, replicas: int | None = None, sync: bool | None = None) -> UpReport: ...
    async def down(self, purge: bool = False) -> DownReport: ...
    async def status(self) -> ClusterStatus: ...
    async def failover(self, to: str | None = None) -> FailoverReport: ...
    async def switchover(self, to: str | None = None) -> FailoverReport: ...
    async def rejoin(self, name: str) -> RejoinReport: ...
    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]: ...
    async def add_replica(self, sync: bool = False) -> ReplicaReport: ...
    async def remove_replica(self, name: str) -> ReplicaReport: ...
    async def resize(self, *, memory: str | None = None, cpu: int | None = None,
                     vm_size: str | None = None) -> Report: ...
    async def logs(self, query: LogQuery) -> LogReport: ...
    def follow_logs(self, query: LogQuery) -> AsyncIterator[dict[str, Any]]: ...
    async def pooler(self, action: str) -> dict[str, Any]: ...


class Managed(Cluster, Protocol):
    """An engine whose PostgreSQL nodes CardMint runs on this machine (local, patroni):
    their state file, home lock and superuser connections are there for the procedures
    that work on the nodes themselves (backups, rotation, drills)."""

    home: Path
    admin: NodeAdmin
    settings: Settings

    @property
    def archive(self) -> Path: ...

    def state(self) -> ClusterState | None: ...
    def ready_state(self) -> ClusterState: ...
    def passwords(self) -> dict[str, str]: ...
    def lock(self) -> AbstractContextManager[None]: ...
    async def resolve(self, name: str | None) -> Node: ...
    async def refresh(self) -> None:
        """cluster.json's roles as the engine has them now (Patroni may fail over alone)."""
    async def apply_password(self, role: str, password: str) -> None:
        """After `ALTER ROLE role PASSWORD ...`: what runs with that password follows it
        (the pooler's auth file; the local replicas' primary_conninfo)."""
    async def credentials_saved(self, role: str) -> str:
        """After the secrets file holds the role's new password; a note for the report."""
