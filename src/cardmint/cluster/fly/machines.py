"""What flyctl's JSON says about machines, volumes and snapshots, typed.

`machine list --json` prints fly-go's `Machine` (machine_types.go): the health checks
come as `checks` [{name, status, output}], the VM as `config.guest` {cpu_kind, cpus,
memory_mb}, the cluster manager as the image label `fly.pg-manager` ("repmgr" on flex,
absent on stolon images), the primary region as `config.env.PRIMARY_REGION`.
`volumes list --json` prints `Volume`, `volumes snapshots list --json` `VolumeSnapshot`
(volume_types.go); a snapshot still being taken has an empty id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardmint.errors import ClusterError

FLEX = "repmgr"
STOLON = "stolon"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # passing | warning | critical
    output: str


@dataclass(frozen=True)
class Machine:
    id: str
    name: str
    state: str  # started | stopped | stopping | replacing | ...
    region: str | None
    private_ip: str | None
    manager: str  # repmgr (flex) | stolon
    primary_region: str | None
    guest: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    volume: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "started"

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def healthy(self) -> bool:
        """Every health check passing (fly-go `AllHealthChecks().AllPassing()`)."""
        return bool(self.checks) and all(c.status == "passing" for c in self.checks)


@dataclass(frozen=True)
class Volume:
    id: str
    name: str | None
    size_gb: int
    region: str | None
    machine: str | None  # attached_machine_id


@dataclass(frozen=True)
class Snapshot:
    id: str  # "" while it is being taken
    volume: str
    status: str
    size: int | None
    volume_size: int | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id or None, "volume": self.volume, "status": self.status,
                "size": self.size, "volume_size_gb": self.volume_size,
                "created_at": self.created_at}


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def machine(doc: Any) -> Machine:
    if not isinstance(doc, Mapping) or not doc.get("id"):
        raise ClusterError("flyctl machine list answered a machine without an id")
    config = _dict(doc.get("config"))
    labels = _dict(_dict(doc.get("image_ref")).get("labels"))
    mounts = config.get("mounts") or []
    checks = tuple(Check(str(c.get("name") or ""), str(c.get("status") or ""),
                         str(c.get("output") or "")) for c in doc.get("checks") or []
                   if isinstance(c, Mapping))
    return Machine(
        id=str(doc["id"]), name=str(doc.get("name") or doc["id"]),
        state=str(doc.get("state") or "unknown"), region=doc.get("region"),
        private_ip=doc.get("private_ip"),
        manager=FLEX if labels.get("fly.pg-manager") == FLEX else STOLON,
        primary_region=_dict(config.get("env")).get("PRIMARY_REGION"),
        guest=dict(_dict(config.get("guest"))), checks=checks,
        volume=(_dict(mounts[0]).get("volume") if mounts else None))


def machines(doc: Any) -> list[Machine]:
    if not isinstance(doc, list):
        raise ClusterError("flyctl machine list did not answer a JSON list")
    return [machine(m) for m in doc]


def volumes(doc: Any) -> list[Volume]:
    if not isinstance(doc, list):
        raise ClusterError("flyctl volumes list did not answer a JSON list")
    return [Volume(str(v["id"]), v.get("name"), int(v.get("size_gb") or 0), v.get("region"),
                   v.get("attached_machine_id")) for v in doc if isinstance(v, Mapping)]


def snapshots(volume: str, doc: Any) -> list[Snapshot]:
    if not isinstance(doc, list):
        raise ClusterError("flyctl volumes snapshots list did not answer a JSON list")
    return [Snapshot(str(s.get("id") or ""), volume, str(s.get("status") or ""),
                     s.get("size"), s.get("volume_size"), str(s.get("created_at") or ""))
            for s in doc if isinstance(s, Mapping)]
