"""`postgres failover|create|connect`.

internal/command/postgres/postgres.go prints its notice on stderr before every
subcommand. failover.go: a flex (repmgr) cluster needs 3 machines ("Not enough machines
to meet quorum requirements"), a passing leader and a healthy candidate; it stops the
old leader, promotes, restarts the old one, waits up to 60 s for the swap and then up to
300 s for every health check (internal/watch/watch.go). create.go with prompt.go: without
a terminal every question flyctl would ask is an error; flypg/launcher.go: the app is
created first (so a cut-off run leaves it, name taken), the snapshot machine may take up
to an hour to start, the others 5 minutes each, and the superuser password is printed
once, at the end.
"""

from __future__ import annotations

import random
import string
import time
from typing import Any

from standin.machines import PRESETS, _role_check
from standin.world import Exit, app_of, edit, err, hashed, now, out, primary_roles, timing

NOTICE = ("Unmanaged Fly Postgres is not supported by Fly.io Support and users are "
          "responsible for operations, management, and disaster recovery. If you'd like a "
          "managed, supported solution, try 'fly mpg' (Managed Postgres).\nPlease visit "
          "https://fly.io/docs/mpg/overview/ for more information about Managed Postgres.\n")


def notice() -> None:
    err(f"\n{NOTICE}\n")


def _passing(app: dict[str, Any], m: dict[str, Any], t: float) -> bool:
    return _role_check(app, m, t)[0] == "passing"


def _wait_healthy(name: str, ids: list[str]) -> None:
    """internal/watch/watch.go MachinesChecks: every check passing (up to 300 s)."""
    deadline = now() + 300
    while True:
        with edit() as w:
            app = w["apps"][name]
            ms = [m for m in app["machines"] if m["id"] in ids]
            t = now()
            waiting = [m for m in ms if not _passing(app, m, t)]
            ready = max((m.get("ready_at", 0) for m in waiting), default=t)
        for m in ms:
            err(f"  Waiting for {m['id']} to become healthy ({m['state']}, "
                f"{0 if m in waiting else 3}/3)\n")
        if not waiting:
            return
        if now() > deadline:
            raise Exit("failed to wait for health checks to pass: context deadline exceeded")
        time.sleep(max(0.02, min(1.0, ready - now())))


def failover(args: Any) -> None:
    notice()
    name = args.app()
    with edit() as w:
        app = app_of(w, name)
        if not app.get("postgres"):
            raise Exit(f"app {name} is not a Postgres app")
        machines = app["machines"]
        if len(machines) <= 1:
            raise Exit("failover is not available for standalone postgres")
        t = now()
        heads = primary_roles(app)
        leader = next((m for m in machines if _passing(app, m, t)
                       and _role_check(app, m, t)[1] in ("leader", "primary")), None)
        if leader is None:
            raise Exit("no active leader found")
        if app.get("manager", "repmgr") == "repmgr":
            new = _flex_candidate(app, machines, leader, t)
        else:
            new = next((m for m in machines if m is not leader and _passing(app, m, t)
                        and m["role"] == "replica"), None)
            if new is None:
                raise Exit("failed to trigger failover no replica to promote")
            out("Performing a failover\n")
        leader["role"], new["role"] = "replica", heads[0]
        restart_at = t + timing(w, "failover_s")
        leader["ready_at"] = restart_at + timing(w, "boot_s")
        ids = [m["id"] for m in machines]
        flex = app.get("manager", "repmgr") == "repmgr"
    if flex:
        out(f"Stopping current leader...  {leader['id']}\nStarting new leader\n"
            f"Promoting new leader...  {new['id']}\n"
            "Waiting 30 seconds for the old leader to stop...\n"
            f"Restarting old leader... {leader['id']}\n"
            f"Waiting for leadership to swap to {new['id']}...\n")
    time.sleep(max(0.0, restart_at - now()))
    _wait_healthy(name, ids)
    out("Failover complete\n")


def _flex_candidate(app: dict[str, Any], machines: list[dict[str, Any]],
                    leader: dict[str, Any], t: float) -> dict[str, Any]:
    if len(machines) < 3:
        # flexFailover fails, then handleFlexFailoverFail tries to start the running leader
        err("Error promoting new leader, restarting existing leader\n")
        out("Waiting for old leader to finish stopping\nClearing existing machine lease...\n"
            "Trying to start old leader\n")
        err("Failed to handle failover failure, please manually configure PG cluster "
            "primary")
        raise Exit("Failed to run failover: Not enough machines to meet quorum requirements")
    out("Performing a failover\n")
    voters = [m for m in machines if m["role"] not in ("witness", "barman")]
    visible = [m for m in voters if m["state"] == "started"]
    quorum = len(visible) >= len(voters) // 2 + 1
    reasons = {}
    for m in machines:
        if m is leader or m.get("region", "ord") != app.get("primary_region", "ord"):
            continue
        if _role_check(app, m, t)[1] in ("primary", "leader"):
            reasons[m["id"]] = "already leader"
        elif not _passing(app, m, t):
            reasons[m["id"]] = "1+ health checks are not passing"
        elif not quorum:
            reasons[m["id"]] = ("Running a dry run of `repmgr standby switchover` failed. "
                                "This was most likely due to the requirements for quorum not "
                                "being met.")
        else:
            return m
    raise Exit("Failed to run failover: no leader could be chosen. Here are the reasons why: "
               "\n" + "".join(f"{k}: {v}\n" for k, v in reasons.items())
               + "\nplease fix one or more of the above issues, and try again\n")


def _guest(args: Any, custom: bool) -> dict[str, Any]:
    """create.go: --vm-cpus/--vm-cpu-kind/--vm-memory make a custom guest
    (internal/flag/machines.go GetMachineGuest); else --vm-size names one."""
    if custom:
        kind, cpus, memory = PRESETS["shared-cpu-1x"]
        kind = args.get("vm-cpu-kind", kind)
        if kind not in ("shared", "performance"):
            raise Exit("--vm-cpu-kind must be set to 'shared' or 'performance'")
        cpus = int(args.get("vm-cpus", cpus))
        memory = int(args.get("vm-memory", memory))
        return {"cpu_kind": kind, "cpus": cpus, "memory_mb": memory}
    size = args.get("vm-size")
    if size is None:
        raise Exit("prompt: non interactive")  # prompt.SelectVMSize
    if size not in PRESETS:
        raise Exit(f'VM size "{size}" is not valid. For a full list of supported sizes use '
                   "the command 'flyctl platform vm-sizes'")
    kind, cpus, memory = PRESETS[size]
    return {"cpu_kind": kind, "cpus": cpus, "memory_mb": memory}


def _org(w: dict[str, Any], slug: str | None) -> dict[str, Any]:
    """internal/prompt/prompt.go Org."""
    orgs = w.get("orgs") or [{"slug": "personal", "type": "PERSONAL"}]
    if slug:
        for org in orgs:
            if org["slug"] == slug:
                return dict(org)
        raise Exit(f"organization {slug} not found")
    if len(orgs) == 1 and orgs[0].get("type") == "PERSONAL":
        err(f"automatically selected personal organization: {orgs[0].get('name', 'me')}\n")
        return dict(orgs[0])
    raise Exit("org slug must be specified when not running interactively")


def create(args: Any) -> None:
    notice()
    name = args.get("name")
    if not name:
        raise Exit("name argument or flag must be specified when not running interactively")
    snapshot = args.get("snapshot-id")
    custom_machine = any(args.get(f) is not None for f in ("vm-cpus", "vm-cpu-kind",
                                                           "vm-memory"))
    with edit() as w:
        org = _org(w, args.get("org"))
        region = args.get("region")
        if not region:
            raise Exit("region code must be specified when not running interactively")
        if region not in (w.get("regions") or ["ord", "iad", "ams", "syd"]):
            raise Exit(f"region {region} not found")
        custom = custom_machine or any(args.get(f) is not None for f in (
            "vm-size", "volume-size", "initial-cluster-size"))
        if not custom:
            raise Exit("prompt: non interactive")  # "Select configuration:"
        if args.get("initial-cluster-size") is None:
            raise Exit("prompt: non interactive")  # "Initial cluster size"
        size = int(args.get("initial-cluster-size"))
        guest = _guest(args, custom_machine)
        if args.get("volume-size") is None:
            raise Exit("prompt: non interactive")  # "Volume size"
        volume_gb = int(args.get("volume-size"))
        if snapshot:
            snap = next((s for snaps in (w.get("snapshots") or {}).values() for s in snaps
                         if s["id"] == snapshot and s["status"] == "created"), None)
            if snap is None:
                raise Exit(f"failed to create volume: snapshot {snapshot} not found")
            if volume_gb < int(snap.get("volume_size") or 0):
                raise Exit(f"failed to create volume: size_gb ({volume_gb}) is smaller than "
                           f"the snapshot's volume ({snap['volume_size']} GB)")
        out(f"Creating postgres cluster in organization {org['slug']}\nCreating app...\n")
        if name in w["apps"]:
            raise Exit(f'failed to create app: app name "{name}" is already taken')
        password = args.get("password") or w.get("operator_password") or "".join(
            random.choice(string.ascii_letters + string.digits) for _ in range(15))
        manager = "stolon" if args.get("stolon") else "repmgr"
        w["apps"][name] = {
            "org": org["slug"], "postgres": True, "manager": manager, "deployed": True,
            "primary_region": region, "machines": [], "volumes": [], "logs": [],
            "secrets": {"OPERATOR_PASSWORD": hashed(password)},
            "backend": w.get("restore_backend") if snapshot else None}
        restore_s, boot_s = timing(w, "restore_s"), timing(w, "boot_s")
    out(f"Setting secrets on app {name}...\n")
    image = "flyio/postgres-flex:15.8" if manager == "repmgr" else "flyio/postgres:15.6"
    for i in range(size):
        restoring = bool(snapshot) and i == 0
        out(f"{'Restoring' if restoring else 'Provisioning'} {i + 1} of {size} machines "
            f"with image {image}\nWaiting for machine to start...\n")
        time.sleep(restore_s if restoring else boot_s)
        with edit() as w:
            app = w["apps"][name]
            mid = f"{name[:6]}m{i + 1}"
            app["volumes"].append({"id": f"vol_{name[:6]}{i + 1}", "name": "pg_data",
                                   "size_gb": volume_gb, "region": region,
                                   "attached_machine_id": mid, "snapshot_id":
                                   snapshot if restoring else None})
            app["machines"].append({
                "id": mid, "name": f"{name}-{i + 1}", "state": "started", "region": region,
                "private_ip": f"fdaa:0:9::{i + 2}", "guest": guest, "volume":
                f"vol_{name[:6]}{i + 1}", "role": ("primary" if manager == "repmgr"
                                                   else "leader") if i == 0 else "replica",
                "ready_at": now() + boot_s})
        out(f"Machine {mid} is started\n")
    if not args.get("detach"):
        out("==> Monitoring health checks\n")
        _wait_healthy(name, [f"{name[:6]}m{i + 1}" for i in range(size)])
        out("\n")
    host = f"{name}.flycast" if manager == "repmgr" else f"{name}.internal"
    out(f"Postgres cluster {name} created\n  Username:    postgres\n"
        f"  Password:    {password}\n  Hostname:    {name}.internal\n"
        f"  Flycast:     fdaa:0:9:0:1::3\n  Proxy port:  5432\n  Postgres port:  5433\n"
        f"  Connection string: postgres://postgres:{password}@{host}:5432\n\n"
        "Save your credentials in a secure place -- you won't be able to see them again!\n\n"
        f"Connect to postgres\nAny app within the {org.get('name', org['slug'])} organization "
        "can connect to this Postgres using the above connection string\n\n"
        "Now that you've set up Postgres, here's what you need to understand: "
        "https://fly.io/docs/postgres/getting-started/what-you-should-know/\n")


def connect(args: Any) -> None:
    notice()
    raise Exit("the stand-in has no terminal session to give (flyctl runs psql over ssh)")
