"""Backups on Fly, where they are volume snapshots (the runbook's "Data Recovery"):
`backup create|list|restore` come here when CARDMINT_PROVIDER=fly.

`create` schedules a snapshot of the primary's volume; flyctl learns no id for it, so the
snapshot list is read until a new one shows, and until Fly has taken it. `restore` makes
a new Postgres app from a snapshot with everything flyctl would otherwise ask for (the
source app's org, region, VM, size), keeps the new superuser password flyctl prints once
in the secrets file (never printed), and then runs the local restore's verification
(`restore_check.verify_restored`) against the new app through `flyctl proxy`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

from cardmint import secretfile
from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.machines import Snapshot
from cardmint.cluster.fly.restore import Restored, spec_for
from cardmint.cluster.fly.roles import primary_id
from cardmint.config import Settings, secret
from cardmint.errors import ClusterError, UsageError
from cardmint.ops.backups.restore_check import verify_restored


async def snapshot(fly: FlyCluster) -> dict[str, Any]:
    """A snapshot of the primary's volume (its data is the cluster's), once Fly has it."""
    primary = primary_id(await fly.machines())
    if primary is None:
        raise ClusterError(f"{fly.app} has no machine whose role check passes as primary: "
                           "no volume to snapshot")
    vol = next((v for v in await fly.volumes() if v.machine == primary), None)
    if vol is None:
        raise ClusterError(f"no volume attached to {fly.app}'s primary {primary}")
    before = {s.created_at for s in await fly.snapshots(vol.id)}
    began = time.monotonic()
    await fly.snapshot_create(vol.id)
    new = await _taken(fly, vol.id, before)
    report = {"provider": fly.provider, "volume": vol.id, "machine": primary,
              "scheduled": True, "duration_s": round(time.monotonic() - began, 3),
              "snapshot": new.to_dict() if new else None}
    if new is None or new.status != "created" or not new.id:
        report["detail"] = (f"Fly accepted the snapshot but it was not listed as taken "
                            f"within {fly.waits.snapshot_s:g} s: `cardmint backup list` "
                            "shows it once it is")
    return report


async def _taken(fly: FlyCluster, volume: str, before: set[str]) -> Snapshot | None:
    """The newest snapshot not in `before`, polled until it has an id and is created."""
    deadline = time.monotonic() + fly.waits.snapshot_s
    new: Snapshot | None = None
    while True:
        fresh = [s for s in await fly.snapshots(volume) if s.created_at not in before]
        new = fresh[-1] if fresh else new
        if new is not None and new.id and new.status == "created":
            return new
        if time.monotonic() > deadline:
            return new
        await asyncio.sleep(fly.waits.poll_s)


async def snapshots(fly: FlyCluster) -> dict[str, Any]:
    """Every volume's snapshots, newest first."""
    out = [s for vol in await fly.volumes() for s in await fly.snapshots(vol.id)]
    out.sort(key=lambda s: s.created_at, reverse=True)
    return {"provider": fly.provider, "app": fly.app,
            "snapshots": [s.to_dict() for s in out]}


def password_key(app: str) -> str:
    """Where the superuser password of restored app `app` is kept in the secrets file."""
    return secretfile.role_key(f"fly_{app.replace('-', '_')}_postgres")


async def restore(settings: Settings, fly: FlyCluster, snapshot_id: str,
                  new_app: str) -> dict[str, Any]:
    """A new Postgres app from a snapshot of this app's volumes, verified."""
    volumes = await fly.volumes()
    found = [(v, s) for v in volumes for s in await fly.snapshots(v.id) if s.id == snapshot_id]
    if not found:
        raise UsageError(f"no snapshot {snapshot_id} of {fly.app}'s volumes; "
                         "`cardmint backup list` shows them")
    volume, snap = found[0]
    if snap.status != "created":
        raise UsageError(f"snapshot {snapshot_id} is {snap.status}, not taken yet")
    if await fly.app_exists(new_app):
        raise UsageError(f"an app named {new_app} exists already (a restore cut off earlier "
                         f"leaves one): pick another name, or remove it with `flyctl apps "
                         f"destroy {new_app} --yes`")
    org = ((await fly.app_status()).get("Organization") or {}).get("Slug")
    spec = spec_for(new_app, snapshot_id, org=org, volume=volume,
                    snapshot_volume_gb=snap.volume_size, machines=await fly.machines())
    made = await fly.restore(spec)
    key = password_key(new_app)
    pairs = secretfile.read(settings.secrets_path)
    pairs[key] = made.password.get_secret_value()
    secretfile.write(settings.secrets_path, pairs)
    verification = await _verify(settings, fly, made)
    return {"ok": verification["ok"], "provider": fly.provider, "app": new_app,
            "snapshot": snapshot_id, "volume": volume.id, "created_with": spec.to_dict(),
            "create_s": made.duration_s, "superuser": made.superuser,
            "password_saved_as": f"{key} in {settings.secrets_path}",
            "verification": verification}


async def _verify(settings: Settings, fly: FlyCluster, made: Restored) -> dict[str, Any]:
    """The local restore's checks (promoted, not frozen, schema at head, health,
    test-card) against the new app, reached through `flyctl proxy`. The application's
    roles came with the snapshot, so their DSNs serve with the host changed; the
    superuser is the new one."""
    app_dsn, owner_dsn = secret(settings.database_url), secret(settings.migration_url)
    if not app_dsn or not owner_dsn:
        return {"ok": False, "checks": [{
            "name": "connect", "ok": False, "detail": "set CARDMINT_DATABASE_URL and "
            "CARDMINT_MIGRATION_URL (their roles came with the snapshot) to verify it"}]}
    try:
        async with fly.proxied(made.app) as port:
            return await verify_restored(_through(settings, made, port, app_dsn, owner_dsn))
    except ClusterError as exc:  # the app is there and its password kept: say so
        return {"ok": False, "checks": [{
            "name": "connect", "ok": False, "detail": f"{exc}; verify it later through "
            f"`flyctl proxy 5433:5432 -a {made.app}`"}]}


def _through(settings: Settings, made: Restored, port: int, app_dsn: str,
             owner_dsn: str) -> Settings:
    """`settings` with every DSN leading to the restored app through the local port."""
    def via(dsn: str) -> SecretStr:
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        return SecretStr(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))

    admin = via(f"postgresql://{made.superuser}:"
                f"{quote(made.password.get_secret_value(), safe='')}@x"
                f"{urlsplit(owner_dsn).path}")
    readonly = secret(settings.readonly_url)
    return settings.with_topology(
        None, database_url=via(app_dsn), migration_url=via(owner_dsn),
        readonly_url=via(readonly) if readonly else None, admin_url=admin,
        replica_urls=[], monitor_urls=[admin])
