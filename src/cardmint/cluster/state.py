"""The cluster's state file, `$CARDMINT_HOME/cluster.json`: read and written here only.

It names the nodes (port, data directory, last known role, PID) and the DSNs every
command uses, without passwords: those live in `secrets.env` beside it. Written
atomically, so a killed command leaves the previous state or the new one, never half.
`with_topology` gives settings the DSNs it names and the `Topology` the data layer
follows (a failover rewrites the file; the next replica check sees it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from cardmint import secretfile
from cardmint.config import Settings
from cardmint.dsn import username, with_password

STATE_FILE = "cluster.json"

# Database roles CardMint creates: the owner, the DML-only app, read-only, replication,
# monitoring and the superuser.
SUPERUSER = "postgres"
OWNER = "cardmint_owner"
APP = "cardmint_app"
READONLY = "cardmint_ro"
REPLICATION = "cardmint_replicator"
MONITOR = "cardmint_monitor"  # pg_monitor: health, stats and monitoring read with it
ROLES = (SUPERUSER, OWNER, APP, READONLY, REPLICATION, MONITOR)

FENCED = "fenced"  # a former primary: kept out of every DSN until `cluster rejoin`
CREATING = "creating"  # `up` began but has not finished: never reused as it is
READY = "ready"


@dataclass
class Node:
    name: str
    role: str  # "primary" | "replica": the last role CardMint gave it
    port: int
    datadir: str
    host: str = "127.0.0.1"
    pid: int | None = None

    @property
    def slot(self) -> str:
        """The replication slot this node streams from when it is a replica."""
        return self.name


@dataclass
class ClusterState:
    home: str
    bindir: str
    pg_version: str
    os_user: str | None  # None: PostgreSQL runs as the invoking user
    database: str = "cardmint"
    provider: str = "local"
    status: str = CREATING
    sync: bool = False
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    nodes: list[Node] = field(default_factory=list)
    # PgBouncer before the primary (`cardmint pooler up`): {"port", "pid", "target", ...}
    pooler: dict[str, Any] | None = None
    # The Patroni engine (cluster/patroni.py): scope, DCS and each member's REST port,
    # PID and config file
    patroni: dict[str, Any] | None = None

    @property
    def primary(self) -> Node:
        for node in self.nodes:
            if node.role == "primary":
                return node
        raise LookupError("the state names no primary")

    @property
    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "replica"]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LookupError(f"no node named {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    def dsn(self, user: str, nodes: list[Node] | None = None, database: str | None = None,
            attrs: str | None = None) -> str:
        """A password-less URL for `user` on `nodes` (default: primary first, then replicas)."""
        nodes = nodes if nodes is not None else [self.primary, *self.replicas]
        hosts = ",".join(f"{n.host}:{n.port}" for n in nodes)
        url = f"postgresql://{user}@{hosts}/{database or self.database}"
        if all(n.host.startswith("127.") or n.host in ("localhost", "::1") for n in nodes):
            # Loopback: TLS would cost a fifth to a third of a point read's throughput
            # (measured here) and protect nothing the kernel does not already.
            params = ["sslmode=disable"]
        else:
            params = ["sslmode=verify-full", f"sslrootcert={Path(self.home) / 'tls/ca.crt'}"]
        if attrs:
            params.append(f"target_session_attrs={attrs}")
        return f"{url}?{'&'.join(params)}"

    def dsns(self) -> dict[str, Any]:
        """What settings read: the primary by role (multi-host, read-write) and each replica."""
        return {
            # through PgBouncer when it runs (its port tells the data layer: no statement cache)
            "app": (self.dsn(APP, [Node("pooler", "pooler", self.pooler["port"], "")])
                    if self.pooler else self.dsn(APP, attrs="read-write")),
            "owner": self.dsn(OWNER, attrs="read-write"),
            "readonly": self.dsn(READONLY, attrs="prefer-standby"),
            "admin": self.dsn(SUPERUSER, attrs="read-write"),
            # reads that tolerate lag go to replicas as the read-only role: least privilege
            "replicas": [self.dsn(READONLY, [n]) for n in self.replicas],
            "monitor_nodes": [self.dsn(MONITOR, [n]) for n in self.nodes],
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["pooler"] is None:
            del data["pooler"]  # files without a pooler stay as they were
        if data["patroni"] is None:
            del data["patroni"]  # so do files of the local engine
        data["dsns"] = self.dsns() if self.nodes else {}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        data = dict(data)
        data.pop("dsns", None)
        nodes = [Node(**n) for n in data.pop("nodes", [])]
        return cls(**data, nodes=nodes)


def path(home: Path) -> Path:
    return home / STATE_FILE


def load(home: Path) -> ClusterState | None:
    """The saved state, or None when there is none. A corrupt file is an error, not None."""
    try:
        text = path(home).read_text()
    except FileNotFoundError:
        return None
    try:
        return ClusterState.from_json(json.loads(text))
    except (ValueError, TypeError) as exc:
        from cardmint.errors import ClusterError

        raise ClusterError(f"{path(home)} is not a valid cluster state: {exc}") from exc


def save(state: ClusterState) -> None:
    home = Path(state.home)
    home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".cluster.json.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(state.to_json(), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path(home))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- what the data layer and the settings read of it --------------------------------------


class StateTopology:
    """The DSNs of cluster.json completed with the secrets file's passwords, read again
    only when either file has changed (a failover, a rejoin, a replica added, a
    rotation)."""

    def __init__(self, home: Path, secrets_path: Path) -> None:
        self.home, self.secrets_path = home, secrets_path
        self._stamp: int | None = None  # both files' modification times
        self._dsns: dict[str, Any] | None = None

    def dsns(self) -> dict[str, Any] | None:
        """{"app", "owner", "readonly", "admin": DSN; "replicas", "monitor_nodes": [DSN]},
        passwords in; None without a readable state file."""
        try:
            stamp = os.stat(path(self.home)).st_mtime_ns
        except OSError:
            self._stamp, self._dsns = None, None
            return None
        try:  # a rotation changes the passwords, not cluster.json
            stamp ^= os.stat(self.secrets_path).st_mtime_ns << 1
        except OSError:
            pass
        if stamp != self._stamp:
            try:
                found = json.loads(path(self.home).read_text()).get("dsns") or {}
            except (OSError, ValueError, AttributeError):
                return self._dsns  # mid-rewrite (never, it is atomic) or broken: as before
            secrets = secretfile.read(self.secrets_path)
            self._dsns = {k: ([_complete(d, secrets) for d in v] if isinstance(v, list)
                              else _complete(v, secrets)) for k, v in found.items()}
            self._stamp = stamp
        return self._dsns

    def replica_dsns(self) -> list[str] | None:
        dsns = self.dsns()
        return None if dsns is None else list(dsns.get("replicas") or [])

    def pooler_ports(self) -> set[int]:
        try:
            state = json.loads(path(self.home).read_text())
        except (OSError, ValueError):
            return set()
        port = (state.get("pooler") or {}).get("port") if isinstance(state, dict) else None
        return {int(port)} if port else set()


def _complete(dsn: str, secrets: dict[str, str]) -> str:
    user = username(dsn)
    password = secrets.get(secretfile.role_key(user)) if user else None
    return with_password(dsn, password) if password else dsn


def with_topology(settings: Settings) -> Settings:
    """`settings` with the DSNs the environment did not give taken from cluster.json, and
    the cluster's topology attached for the data layer to follow."""
    topology = StateTopology(settings.home, settings.secrets_path)
    dsns = topology.dsns() or {}
    filled: dict[str, Any] = {}
    for field_name, key in (("database_url", "app"), ("migration_url", "owner"),
                            ("readonly_url", "readonly"), ("admin_url", "admin")):
        if getattr(settings, field_name) is None and dsns.get(key):
            filled[field_name] = SecretStr(dsns[key])
    for field_name, key in (("replica_urls", "replicas"), ("monitor_urls", "monitor_nodes")):
        if not getattr(settings, field_name) and dsns.get(key):
            filled[field_name] = [SecretStr(d) for d in dsns[key]]
    return settings.with_topology(topology, **filled)


DSN_FIELDS = ("database_url", "replica_urls", "migration_url", "readonly_url", "admin_url",
              "monitor_urls")


def refreshed(settings: Settings) -> Settings:
    """The same settings with their DSNs read again, from the environment and then the
    state (after a failover the state names the new primary first)."""
    again = type(settings)(**{k: v for k, v in settings if k not in DSN_FIELDS})
    return with_topology(again)
