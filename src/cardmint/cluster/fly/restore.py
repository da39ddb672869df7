"""`flyctl postgres create --snapshot-id`: a new Postgres app whose first volume starts
from a snapshot.

Without a terminal flyctl asks nothing (internal/command/postgres/create.go with
internal/prompt/prompt.go): the org, the region, the cluster size, the VM and the volume
size must all be on the command line, or it fails at once. CardMint takes them from the
source app: its org (`status --json`), the snapshot's volume (region, size) and the
machine that volume belongs to (the guest: cpu kind, cpus, memory), and as many
machines as the source has (at least 3 on flex, its HA minimum).

flypg/launcher.go creates the app first, so a run cut off or failing later leaves an app
whose name is taken; the restoring machine may take an hour. The new superuser password
is printed once (`  Password:    ...`, and in the connection string): it is read here and
handed back as a secret, never returned as text; flex makes the restored `postgres`
role's password that one (postgres-flex internal/flypg/restore.go).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from cardmint.cluster.fly.flyctl import ident
from cardmint.cluster.fly.machines import FLEX, Machine, Volume
from cardmint.cluster.fly.roles import FLEX_QUORUM
from cardmint.errors import ClusterError

_PASSWORD = re.compile(r"^\s*Password:\s*(\S+)\s*$", re.M)


@dataclass(frozen=True)
class RestoreSpec:
    """Everything `postgres create` would otherwise ask for."""

    new_app: str
    snapshot_id: str
    org: str
    region: str
    machines: int
    volume_gb: int
    cpu_kind: str
    cpus: int
    memory_mb: int
    stolon: bool

    def argv(self) -> list[str]:
        args = ["postgres", "create", "--name", ident(self.new_app, "app"),
                "--snapshot-id", ident(self.snapshot_id, "snapshot id"),
                "--org", ident(self.org, "org"), "--region", ident(self.region, "region"),
                "--initial-cluster-size", str(self.machines),
                "--vm-cpu-kind", ident(self.cpu_kind, "cpu kind"),
                "--vm-cpus", str(self.cpus), "--vm-memory", str(self.memory_mb),
                "--volume-size", str(self.volume_gb)]
        return args + (["--stolon"] if self.stolon else [])

    def to_dict(self) -> dict[str, Any]:
        return {"org": self.org, "region": self.region, "machines": self.machines,
                "volume_gb": self.volume_gb, "guest": f"{self.cpu_kind} {self.cpus} cpu, "
                f"{self.memory_mb} MB", "manager": "stolon" if self.stolon else FLEX}


@dataclass(frozen=True)
class Restored:
    app: str
    superuser: str
    password: SecretStr  # printed once by flyctl; kept secret from here on
    duration_s: float


def spec_for(new_app: str, snapshot_id: str, *, org: str | None, volume: Volume,
             snapshot_volume_gb: int | None, machines: list[Machine]) -> RestoreSpec:
    """The source app's shape, for a restore of one of its volumes' snapshots."""
    if not org:
        raise ClusterError("flyctl status named no organization for the source app")
    owner = next((m for m in machines if m.id == volume.machine), None) or (
        machines[0] if machines else None)
    if owner is None or not owner.guest.get("cpu_kind"):
        raise ClusterError(f"cannot tell the VM of volume {volume.id}'s machine: flyctl "
                           "machine list gave no guest")
    flex = owner.manager == FLEX
    size = max(len(machines), FLEX_QUORUM) if flex else max(len(machines), 1)
    region = volume.region or owner.region
    if not region:
        raise ClusterError(f"volume {volume.id} has no region")
    return RestoreSpec(
        new_app=new_app, snapshot_id=snapshot_id, org=org, region=region, machines=size,
        volume_gb=max(volume.size_gb, int(snapshot_volume_gb or 0)),
        cpu_kind=str(owner.guest["cpu_kind"]), cpus=int(owner.guest.get("cpus") or 1),
        memory_mb=int(owner.guest.get("memory_mb") or 256), stolon=not flex)


def password_in(output: str) -> SecretStr:
    """The superuser password flyctl printed, or a ClusterError (without the output,
    which may hold it)."""
    found = _PASSWORD.findall(output)
    if len(found) != 1:
        raise ClusterError("flyctl postgres create finished but printed no password line "
                           "(`  Password: ...`): read it from its output by hand, or set a "
                           "new one with `flyctl ssh console` and ALTER ROLE")
    return SecretStr(found[0])


def cut_off_advice(app: str) -> str:
    return (f"flyctl creates the app first, so {app} may exist half built (its name is "
            f"taken): look with `flyctl status -a {app}`, and remove it with `flyctl apps "
            f"destroy {app} --yes` before restoring again")
