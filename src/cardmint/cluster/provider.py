"""Which engine runs the cluster, and the one way commands open it.

- ``local`` (the default): PostgreSQL servers on this machine, failover by command.
- ``patroni``: Patroni runs the same servers and fails over by itself; chosen with
  `cardmint cluster up --engine patroni` and remembered in cluster.json.
- ``fly``: a Fly Postgres app driven through flyctl; chosen with ``CARDMINT_PROVIDER=fly``
  and ``CARDMINT_FLY_APP``.

Every engine answers the calls of `cluster.engine.Cluster` with the same report types;
what an engine cannot do is a `UsageError` that says what to do instead. This module is
the one place that maps the settings to an engine; the ops chapters whose steps differ by
engine (backups, drills, security, storage) choose their variant with `engine_of`.
"""

from __future__ import annotations

from cardmint.cluster.engine import Cluster, Managed
from cardmint.cluster.state import load
from cardmint.config import Settings
from cardmint.errors import UsageError

ENGINES = ("local", "patroni", "fly")
CREATED_HERE = ("local", "patroni")  # what `cluster up --engine` can make


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
        from cardmint.cluster.fly import FlyCluster

        return FlyCluster.from_settings(settings)
    if name == "patroni":
        from cardmint.cluster.patroni import PatroniCluster

        return PatroniCluster(settings)
    from cardmint.cluster.local import LocalCluster

    return LocalCluster(settings)


def open_managed(settings: Settings, what: str) -> Managed:
    """The cluster when CardMint runs its nodes (local, patroni); `what` needs them."""
    name = engine_of(settings)
    if name == "fly":
        raise UsageError(f"{what} works on the nodes CardMint runs (local, patroni); on Fly "
                         "use flyctl for it")
    if name == "patroni":
        from cardmint.cluster.patroni import PatroniCluster

        return PatroniCluster(settings)
    from cardmint.cluster.local import LocalCluster

    return LocalCluster(settings)
