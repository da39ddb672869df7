"""Which engine runs the cluster, and the one way commands open it.

- ``local`` (the default): PostgreSQL servers on this machine, failover by command.
- ``patroni``: Patroni runs the same servers and fails over by itself; chosen with
  `cardmint cluster up --engine patroni` and remembered in cluster.json.
- ``fly``: a Fly Postgres app driven through flyctl; chosen with ``CARDMINT_PROVIDER=fly``
  and ``CARDMINT_FLY_APP``.

Every engine answers the same calls with the same report types: ``up``, ``down``,
``status``, ``failover``, ``switchover``, ``rejoin`` and ``psql_command``. What an engine
cannot do is a `UsageError` that says what to do instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from cardmint.cluster.state import load
from cardmint.config import Settings
from cardmint.errors import UsageError

if TYPE_CHECKING:
    from cardmint.cluster.local.failover import FailoverReport
    from cardmint.cluster.local.rejoin import RejoinReport

ENGINES = ("local", "patroni", "fly")
CREATED_HERE = ("local", "patroni")  # what `cluster up --engine` can make


class Cluster(Protocol):
    provider: str
    settings: Settings

    async def up(self, replicas: int | None = None, sync: bool | None = None) -> Any: ...
    async def down(self, purge: bool = False) -> Any: ...
    async def status(self) -> dict[str, Any]: ...
    async def failover(self, to: str | None = None) -> FailoverReport: ...
    async def switchover(self, to: str | None = None) -> FailoverReport: ...
    async def rejoin(self, name: str) -> RejoinReport: ...
    async def psql_command(self, name: str | None,
                           args: list[str]) -> tuple[list[str], dict[str, str]]: ...


def engine_of(settings: Settings, requested: str | None = None) -> str:
    """The engine for these settings: CARDMINT_PROVIDER, else what made cluster.json, else
    local. `requested` (`cluster up --engine`) must agree with an existing cluster."""
    if requested is not None and requested not in CREATED_HERE:
        raise UsageError(f"--engine must be one of {', '.join(CREATED_HERE)}, not "
                         f"{requested!r} (a Fly cluster is chosen with CARDMINT_PROVIDER=fly)")
    if settings.provider == "fly":
        if requested is not None:
            raise UsageError("CARDMINT_PROVIDER=fly: Fly creates its clusters itself "
                             "(`flyctl postgres create`)")
        return "fly"
    state = load(settings.home.resolve())
    existing = state.provider if state is not None else None
    if requested is not None and existing is not None and requested != existing:
        raise UsageError(f"the cluster in {settings.home.resolve()} runs the {existing} engine;"
                         f" `cardmint cluster down --purge` first to make a {requested} one")
    if settings.provider is not None and existing is not None and settings.provider != existing:
        raise UsageError(f"CARDMINT_PROVIDER={settings.provider}, but the cluster in "
                         f"{settings.home.resolve()} runs the {existing} engine")
    return requested or existing or settings.provider or "local"


def open_cluster(settings: Settings, engine: str | None = None) -> Cluster:
    """The cluster these settings name, behind its engine."""
    name = engine_of(settings, engine)
    if name == "fly":
        from cardmint.cluster.fly.engine import FlyCluster

        return FlyCluster.from_settings(settings)
    if name == "patroni":
        from cardmint.cluster.patroni.engine import PatroniCluster

        return PatroniCluster(settings)
    from cardmint.cluster.local.engine import LocalCluster

    return LocalCluster(settings)


def require_local(settings: Settings, what: str) -> None:
    """Operations only the local engine has (add-replica, resize's settings, pooler...)."""
    name = engine_of(settings)
    if name != "local":
        hint = {"fly": "use flyctl for it on Fly",
                "patroni": "Patroni manages its nodes: change its configuration"}[name]
        raise UsageError(f"{what} is for the local engine; this cluster runs {name}: {hint}")
