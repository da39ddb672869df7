"""`volumes list|extend`, `volumes snapshots create|list`.

Shapes: fly-go volume_types.go (`Volume`, `VolumeSnapshot`); texts of
internal/command/volumes/{list,extend,volumes}.go and volumes/snapshots/{create,list}.go.
`snapshots create` prints one line whatever --json says and gets no snapshot id back
(flaps CreateVolumeSnapshot returns nothing); the snapshot shows in `list` without an id
while it is being taken. `extend` with --json prints the volume only, so whether the
machine must be restarted to grow its file system is said in the text alone. The
snapshot commands take their app as LoadAppNameIfPresent does (-a, FLY_APP, fly.toml),
else from the volume.
"""

from __future__ import annotations

from typing import Any

from standin.world import (
    Exit,
    app_of,
    edit,
    err,
    iso,
    now,
    out,
    render_json,
    timing,
    volume_owner,
)


def _volume(v: dict[str, Any]) -> dict[str, Any]:
    return {"id": v["id"], "name": v.get("name", "pg_data"), "state": "created",
            "size_gb": v["size_gb"], "region": v.get("region", "ord"), "zone": "7d2e",
            "encrypted": True, "attached_machine_id": v.get("attached_machine_id"),
            "attached_alloc_id": None, "created_at": "2026-08-01T10:00:00Z",
            "host_dedication_id": "", "snapshot_retention": 5, "auto_backup_enabled": True}


def list_(args: Any) -> None:
    name = args.app()
    with edit() as w:
        vols = [_volume(v) for v in app_of(w, name).get("volumes") or []]
    if args.get("json"):
        render_json(vols)
        return
    for v in vols:
        out(f"{v['id']}\tcreated\t{v['name']}\t{v['size_gb']}GB\t{v['region']}\n")


def extend(args: Any) -> None:
    name = args.app()
    if len(args.words) != 1:
        raise Exit("the stand-in needs the volume id (flyctl would prompt)")
    raw = str(args.get("size") or "")
    try:
        size = int(raw.lstrip("+")) if raw else 0
    except ValueError:
        raise Exit(f'invalid size "{raw}"') from None
    if size == 0:
        raise Exit("Volume size must be specified")
    with edit() as w:
        app = app_of(w, name)
        vol = next((v for v in app.get("volumes") or [] if v["id"] == args.words[0]), None)
        if vol is None:
            raise Exit(f"failed to extend volume: failed to extend volume {args.words[0]}: "
                       "volume not found")
        if raw.startswith("+"):
            size += vol["size_gb"]
        if size <= vol["size_gb"]:
            raise Exit(f"failed to extend volume: failed to extend volume {vol['id']}: "
                       f"new size must be larger than the current size ({vol['size_gb']}GB)")
        vol["size_gb"] = size
        doc, restart = _volume(vol), bool(vol.get("needs_restart"))
    if args.get("json"):
        render_json(doc)
        return
    for label, key in (("ID", "id"), ("Name", "name"), ("Region", "region"),
                       ("Zone", "zone"), ("Size GB", "size_gb"), ("Encrypted", "encrypted")):
        out(f"{label:>20}: {doc[key]}\n")
    out("You will need to stop and start your Machine to increase the size of the file "
        "system\n" if restart else
        "Your Machine got its volume size extended without needing a restart\n")


def _snap_app(args: Any, w: dict[str, Any], volume_id: str) -> tuple[str, dict[str, Any]]:
    owner = volume_owner(w, volume_id)
    name = args.app(required=False)
    if name is None:  # client.GetAppNameFromVolume
        if owner is None:
            raise Exit(f"failed getting app name from volume: volume {volume_id} not found")
        name = owner[0]
    app_of(w, name)
    if owner is None or owner[0] != name:
        raise Exit(f"failed to get volume {volume_id} snapshots: volume not found "
                   f"(app {name})")
    return name, owner[1]


def snapshot_create(args: Any) -> None:
    if len(args.words) != 1:
        raise Exit(f"accepts 1 arg(s), received {len(args.words)}")
    volume_id = args.words[0]
    with edit() as w:
        _, vol = _snap_app(args, w, volume_id)
        snaps = w.setdefault("snapshots", {}).setdefault(volume_id, [])
        t = now()
        snaps.append({"id": "", "pending_id": f"vs_{volume_id[4:10]}{len(snaps) + 1}",
                      "size": 0, "volume_size": vol["size_gb"], "digest": "",
                      "created_at": iso(t), "status": "pending", "retention_days": 5,
                      "due": t + timing(w, "snapshot_s")})
    out(f"Scheduled to snapshot volume {volume_id}\n")


def snapshot_list(args: Any) -> None:
    if len(args.words) != 1:
        raise Exit(f"accepts 1 arg(s), received {len(args.words)}")
    volume_id = args.words[0]
    with edit() as w:
        _snap_app(args, w, volume_id)
        snaps = sorted(w.get("snapshots", {}).get(volume_id, []),
                       key=lambda s: s["created_at"])
        docs = [{"id": s["id"], "size": s["size"] if s["status"] != "created" else
                 s.get("size") or 48 * 2**20, "volume_size": s.get("volume_size", 0),
                 "digest": s.get("digest") or ("d" * 12 if s["status"] == "created" else ""),
                 "created_at": s["created_at"], "status": s["status"],
                 "retention_days": s.get("retention_days")} for s in snaps]
    if args.get("json"):
        render_json(docs)
        return
    if not docs:
        err(f"No snapshots available for volume {volume_id}\n")
        return
    for d in docs:
        out(f"{d['id'] or '(pending)'}\t{d['status']}\t{d['size']}\t{d['created_at']}\n")
