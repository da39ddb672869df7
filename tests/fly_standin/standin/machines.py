"""Machines: `status`, `machine list|kill|stop|start|update`, `apps destroy`.

Shapes: fly-go machine_types.go (`Machine`, `MachineConfig`, `MachineCheckStatus`), the
Postgres machine config of flypg/launcher.go (checks pg/role/vm on port 5500, restart
policy `always`, services 5432 = the proxy, 5433 = Postgres itself), texts of
internal/command/machine/{kill,stop,start,update}.go and internal/machine/update.go, the
status document of internal/command/status/machines.go (renderMachineJSONStatus).
"""

from __future__ import annotations

import time
from typing import Any

from standin.world import (
    Exit,
    app_of,
    edit,
    err,
    iso,
    now,
    out,
    primary_roles,
    render_json,
    timing,
)

IMAGES = {
    "repmgr": ("flyio/postgres-flex", "15.8", {"fly.pg-manager": "repmgr",
                                               "fly.pg-version": "15.8",
                                               "fly.version": "v0.0.62"}),
    "stolon": ("flyio/postgres", "15.6", {"fly.pg-version": "15.6",
                                          "fly.version": "v0.0.46"}),
}
PRESETS = {  # fly-go machine_types.go MachinePresets (the ones a database would use)
    **{f"shared-cpu-{n}x": ("shared", n, 256 * n) for n in (1, 2, 4, 6, 8)},
    **{f"performance-{n}x": ("performance", n, 2048 * n) for n in (1, 2, 4, 6, 8, 16)},
}


def _role_check(app: dict[str, Any], m: dict[str, Any], t: float) -> tuple[str, str]:
    """postgres-flex internal/flycheck/role.go: the role while the check passes."""
    if m["state"] != "started" or t < m.get("ready_at", 0):
        return "critical", ""
    if t < m.get("zombie_until", 0):
        return "passing", "zombie"
    return "passing", m["role"]


def render(name: str, app: dict[str, Any], m: dict[str, Any], t: float) -> dict[str, Any]:
    """One fly.Machine as `machine list --json` prints it."""
    guest = m.get("guest") or {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    config: dict[str, Any] = {"init": {}, "guest": guest,
                              "restart": {"policy": m.get("restart", "always")}}
    doc: dict[str, Any] = {
        "id": m["id"], "name": m.get("name", m["id"]), "state": m["state"],
        "region": m.get("region", "ord"), "instance_id": "01JBK" + m["id"].upper()[:8],
        "private_ip": m.get("private_ip", "fdaa:0:1::2"), "created_at": "2026-08-01T10:00:00Z",
        "updated_at": iso(m.get("updated", t)), "host_status": "ok", "cordoned": False,
        "config": config,
    }
    if not app.get("postgres"):
        doc["image_ref"] = {"registry": "registry.fly.io", "repository": name,
                            "tag": "deployment-01J0", "labels": {}}
        config["image"] = f"registry.fly.io/{name}:deployment-01J0"
        config["env"] = {"FLY_PROCESS_GROUP": "app"}
        config["metadata"] = {"fly_platform_version": "v2", "fly_process_group": "app"}
        return doc
    repo, tag, labels = IMAGES[app.get("manager", "repmgr")]
    doc["image_ref"] = {"registry": "registry-1.docker.io", "repository": repo, "tag": tag,
                        "digest": "sha256:5f2a", "labels": labels}
    config["image"] = f"{repo}:{tag}"
    config["env"] = {"PRIMARY_REGION": app.get("primary_region", "ord")}
    config["metadata"] = {"fly-managed-postgres": "true", "fly_platform_version": "v2",
                          "managed-by-fly-deploy": "true"}
    if m.get("volume"):
        config["mounts"] = [{"path": "/data", "volume": m["volume"], "name": "pg_data"}]
    config["services"] = [
        {"protocol": "tcp", "internal_port": port, "ports": [{"port": port,
                                                              "handlers": ["pg_tls"]}]}
        for port in ((5432, 5433) if app.get("manager", "repmgr") == "repmgr" else (5432,))]
    config["checks"] = {c: {"port": 5500, "type": "http", "interval": "15s", "timeout": "10s",
                            "path": f"/flycheck/{c}"} for c in ("pg", "role", "vm")}
    status, role = _role_check(app, m, t)
    checks = [{"name": "pg", "status": status, "output": "[✓] connections: 9 used, 3 "
               "reserved, 300 max (4.1ms)" if status == "passing" else ""},
              {"name": "role", "status": status, "output": role},
              {"name": "vm", "status": status, "output": "[✓] checkDisk: 8.9 GB (91.1%) "
               "free space on /data/ (40µs)" if status == "passing" else ""}]
    doc["checks"] = [{k: v for k, v in {**c, "updated_at": iso(t)}.items() if v != ""}
                     for c in checks]  # omitempty
    return doc


def find(app_name: str, app: dict[str, Any], machine_id: str) -> dict[str, Any]:
    for m in app.get("machines") or []:
        if m["id"] == machine_id:
            return m
    # internal/command/machine/select.go rewriteMachineNotFoundErrors
    raise Exit(f"machine {machine_id} was not found in app '{app_name}'")


def _one_id(args: Any) -> str:
    if len(args.words) != 1:
        raise Exit("a machine ID or an app name is required" if not args.words else
                   f"accepts 1 arg(s), received {len(args.words)}")
    return str(args.words[0])


def status(args: Any) -> None:
    name = args.app()
    t = now()
    with edit() as w:
        app = app_of(w, name)
        ms = sorted((render(name, app, m, t) for m in app.get("machines") or []),
                    key=lambda m: m["id"], reverse=True)
        org = next((o for o in w.get("orgs") or [] if o["slug"] == app.get("org")), {})
    if args.get("json"):
        render_json({
            "ID": name, "Name": name, "Deployed": app.get("deployed", True),
            "Status": app.get("status", "deployed"), "Hostname": f"{name}.fly.dev",
            "Version": app.get("version", 1), "AppURL": "",
            "Organization": {"ID": org.get("id", "o1"), "InternalNumericID": "1",
                             "Name": org.get("name", org.get("slug")),
                             "Slug": org.get("slug"), "RawSlug": org.get("slug"),
                             "PaidPlan": org.get("paid", True)},
            "PlatformVersion": "machines", "Machines": ms})
        return
    out(f"ID = {name}\nName = {name}\nOwner = {org.get('slug')}\nStatus = "
        f"{app.get('status', 'deployed')}\n")
    for m in ms:
        out(f"{m['id']}  {m['region']}  {m['state']}\n")


def list_(args: Any) -> None:
    name = args.app()
    t = now()
    with edit() as w:
        app = app_of(w, name)
        ms = [render(name, app, m, t) for m in app.get("machines") or []]
    if args.get("json"):
        render_json(ms)
        return
    out(f"{len(ms)} machines have been retrieved from app {name}.\n")
    for m in ms:
        out(f"{m['id']}\t{m['name']}\t{m['state']}\t{m['region']}\n")


def _lost_primary(app: dict[str, Any], m: dict[str, Any], t: float) -> None:
    if app.get("postgres") and m["role"] in primary_roles(app):
        app.setdefault("primary_lost_at", t)


def kill(args: Any) -> None:
    """internal/command/machine/kill.go: SIGKILL to the machine's process. flyd then
    applies the restart policy: Fly Postgres machines have `always`, so it comes back."""
    machine_id = _one_id(args)
    name = args.app()
    with edit() as w:
        app = app_of(w, name)
        m = find(name, app, machine_id)
        out(f"machine {m['id']} was found and is currently in a {m['state']} state, "
            "attempting to kill...\n")
        t = now()
        m["state"] = "stopped"
        m["updated"] = t
        _lost_primary(app, m, t)
        if m.get("restart", "always") == "always":
            m["restart_at"] = t + timing(w, "restart_s")
    out("kill signal has been sent\n")


def stop(args: Any) -> None:
    """internal/command/machine/stop.go: stopped on purpose, so the restart policy does
    not apply; --signal only chooses how the main process is told."""
    if not args.words:
        raise Exit("a machine ID or an app name is required")
    name = args.app()
    for machine_id in args.words:
        out(f"Sending kill signal to machine {machine_id}...\n")
        with edit() as w:
            app = app_of(w, name)
            m = find(name, app, machine_id)
            t = now()
            m["state"] = "stopped"
            m["updated"] = t
            m.pop("restart_at", None)
            _lost_primary(app, m, t)
        out(f"{machine_id} has been successfully stopped\n")


def start(args: Any) -> None:
    """internal/command/machine/start.go. A returning flex primary that finds another
    primary boots as a zombie, then rejoins as a standby (postgres-flex zombie.go)."""
    if not args.words:
        raise Exit("a machine ID or an app name is required")
    name = args.app()
    for machine_id in args.words:
        with edit() as w:
            app = app_of(w, name)
            m = find(name, app, machine_id)
            if m["state"] == "started":
                raise Exit(f"could not start machine {machine_id}: failed to start VM "
                           f"{machine_id}: machine still active, refusing to start")
            t = now()
            boot = timing(w, "boot_s")
            m["state"], m["updated"], m["ready_at"] = "started", t, t + boot
            heads = primary_roles(app)
            if app.get("postgres") and m["role"] in heads and any(
                    o is not m and o["role"] in heads and o["state"] == "started"
                    for o in app["machines"]):
                m["role"] = "replica"
                m["ready_at"], m["zombie_until"] = t + boot / 2, t + boot
        out(f"{machine_id} has been started\n")


def update(args: Any) -> None:
    """internal/command/machine/update.go and internal/machine/update.go: a prompt
    without --yes; then the machine restarts and flyctl waits --wait-timeout (default
    300 s) for it to settle and up to 300 s more for its health checks."""
    machine_id = _one_id(args)
    name = args.app()
    if not args.get("yes"):
        raise Exit("yes flag must be specified when not running interactively")
    size = args.get("vm-size")
    if size is not None and size not in PRESETS:
        raise Exit(f"invalid machine preset requested, '{size}', expected to start with "
                   "'shared' or 'performance'")
    wait_timeout = float(args.get("wait-timeout", 300))
    with edit() as w:
        app = app_of(w, name)
        m = find(name, app, machine_id)
        if size is not None:
            kind, cpus, memory = PRESETS[size]
            m["guest"] = {"cpu_kind": kind, "cpus": cpus, "memory_mb": memory}
        t = now()
        settle_s = timing(w, "update_s")
        m["state"], m["updated"], m["ready_at"] = "started", t, t + settle_s + timing(w,
                                                                                    "boot_s")
        ready_at = m["ready_at"]
    out(f"Updating machine {machine_id}\n")
    if settle_s > wait_timeout:
        time.sleep(wait_timeout)
        raise Exit("timeout reached waiting for machine's state to change")
    err(f"  Waiting for {machine_id} to become healthy (started, 0/3)\n")
    time.sleep(max(0.0, ready_at - now()))
    err(f"  Waiting for {machine_id} to become healthy (started, 3/3)\n")
    out(f"Machine {machine_id} updated successfully!\n\nMonitor machine status here:\n"
        f"https://fly.io/apps/{name}/machines/{machine_id}\n")


def destroy_apps(args: Any) -> None:
    """internal/command/apps/destroy.go (the advice after a cut-off restore)."""
    if not args.words:
        raise Exit("no app names provided")
    if not args.get("yes"):
        raise Exit("yes flag must be specified when not running interactively")
    for name in args.words:
        with edit() as w:
            app_of(w, name)
            del w["apps"][name]
        out(f"Destroyed app {name}\n")
