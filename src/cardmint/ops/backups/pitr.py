"""`cardmint backup restore`: point-in-time recovery into a new cluster, verified before
the application may be repointed to it.

pgBackRest restores the backup into a new directory, which is configured to fetch WAL
with `archive-get` up to the target and promote there (archiving off, stale replication
settings gone), started on its own loopback port, waited for until it accepts writes, and checked
with health and test-card. It keeps running as `restore<N>`, described by
`$CARDMINT_HOME/restores/<name>/` (its own cluster.json, so any command can be pointed at
it with `--home`). `--repoint` then makes it the cluster's primary (repoint.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from cardmint.clock import utc
from cardmint.cluster.home import free_ports
from cardmint.cluster.pg import backrest, nodes, process
from cardmint.cluster.pg.admin import NodeAdmin
from cardmint.cluster.pg.probe import parse_lsn
from cardmint.cluster.pg.roles import literal, scram_verifier
from cardmint.cluster.state import (
    READY,
    SUPERUSER,
    ClusterState,
    Node,
    StateTopology,
    load,
    save,
)
from cardmint.config import Settings, secret
from cardmint.db import one
from cardmint.db.connect import connection
from cardmint.dsn import username, with_password
from cardmint.errors import BackupError, CardmintError, DatabaseUnavailable, UsageError
from cardmint.ops import facts
from cardmint.ops.backups import restore_plan, store
from cardmint.ops.backups.restore_check import verify_restored

RECORD = "restore.json"


async def restore(settings: Settings, *, to: Path, backup_id: str | None = None,
                  target_time: datetime | str | None = None, target_lsn: str | None = None,
                  latest: bool = False, port: int | None = None,
                  repoint: bool = False, repo: int | None = None,
                  primary_gone: bool = False) -> dict[str, Any]:
    """Restore into `to` (from `repo` alone, if given); with `repoint`, make it the
    primary once it is verified. `primary_gone`: do not ask the old primary to archive
    its latest WAL (its host is lost). Returns the `backup restore --json` contract
    (plus details)."""
    began = time.monotonic()
    goal = restore_plan.target(target_time, target_lsn, latest)
    s = store.site(settings)
    to = _empty_dir(s, to)
    port = _port(port)
    s.configure()
    only = (f"--repo={repo}",) if repo else ()
    meta = restore_plan.choose(store.finished(s, s.info(*only)), goal, backup_id)
    steps: dict[str, float] = {}
    lap = time.monotonic()

    def step(name: str) -> None:
        nonlocal lap
        now = time.monotonic()
        steps[name] = round(now - lap, 3)
        lap = now

    warnings = [] if goal.kind == "immediate" or primary_gone else \
        await _archive_through(settings, s, goal)
    step("archive_wait_s")
    name = _new_name(s)
    node = Node(name=name, role="primary", port=port, datadir=str(to))
    home = s.home / "restores" / name
    try:
        s.user.own(to)
        await store.run(s.user, backrest.base_argv(
            s.home, "restore", f"--repo={repo or meta['repo']}", f"--set={meta['label']}",
            f"--pg1-path={to}", "--type=immediate", "--archive-mode=off"))
        _configure(s, node, goal, repo)
        step("extract_s")
        node.pid = await start_node(s, node)
        adopted = not await _await_promoted(s, node)
        if adopted:
            node.pid = await _adopt_current_passwords(s, node)
        step("recovery_s")
    except BaseException as exc:
        await _abandon(s, node)
        if isinstance(exc, CardmintError):
            raise BackupError(f"restore of backup {meta['id']} failed: {exc}") from exc
        raise
    promoted_s = round(time.monotonic() - began, 3)
    node_settings = describe(s, node, home)
    check = await verify_restored(node_settings)
    step("verify_s")
    duration = round(time.monotonic() - began, 3)
    record = {
        "ok": check["ok"], "target": goal.to_dict(), "backup_id": meta["id"],
        "restored_dir": str(to), "port": port, "node": name, "pid": node.pid,
        "home": str(home), "restored_at": utc().isoformat(), "promoted_s": promoted_s,
        "duration_s": duration, "steps": steps, "repointed": False,
        "passwords_adopted": adopted, "warnings": warnings,
        "verification": check,
    }
    _write_record(home, record)
    if repoint:
        from cardmint.ops.backups.repoint import repoint as switch  # only this path needs it

        if not check["ok"]:
            record["repoint"] = {"ok": False, "detail": "verification failed: not repointed"}
        else:
            record["repoint"] = await switch(s, node, reason=f"restored from backup "
                                             f"{meta['id']} to {goal.to_dict()}")
            record["repointed"] = bool(record["repoint"]["ok"])
            record["ok"] = record["ok"] and record["repointed"]
        _write_record(home, record)
    return record


def _empty_dir(s: store.Site, to: Path) -> Path:
    to = to.expanduser().resolve()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UsageError(f"{to} is not an empty directory: restore never writes over data")
    to.parent.mkdir(parents=True, exist_ok=True)
    s.user.check_reachable(to)
    return to


def _port(port: int | None) -> int:
    if port is None:
        return free_ports(1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"port {port} is in use on 127.0.0.1: choose another") from None
    return port


def _new_name(s: store.Site) -> str:
    taken = {n.name for n in s.state.nodes}
    restores = s.home / "restores"
    n = 1
    while f"restore{n}" in taken or (restores / f"restore{n}").exists():
        n += 1
    (restores / f"restore{n}").mkdir(parents=True)
    return f"restore{n}"


async def _archive_through(settings: Settings, s: store.Site,
                           goal: restore_plan.Target) -> list[str]:
    """Make the WAL that covers the target archived: switch to a new segment on the
    primary, then wait until the archiver has copied the one just finished."""
    dsn = secret(settings.admin_url)
    try:
        async with connection(dsn or "", settings, application="cardmint-restore") as conn:
            row = one(await conn.fetchrow("SELECT clock_timestamp() AS now, "
                                          "pg_current_wal_lsn()::text AS lsn"))
            if goal.kind == "time" and goal.time and goal.time > row["now"]:
                raise UsageError(f"--target-time {goal.time.isoformat()} is in the future "
                                 f"(the primary's clock says {row['now'].isoformat()})")
            if goal.kind == "lsn" and (parse_lsn(goal.lsn) or 0) > (parse_lsn(row["lsn"]) or 0):
                raise UsageError(f"--target-lsn {goal.lsn} is past the primary's WAL "
                                 f"({row['lsn']})")
            segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
            wait = settings.backup_archive_wait_s
            if not await _archived(conn, s, segment, wait):
                archiver = await facts.archiver(conn)
                why = (f"; archiving fails (last failure {archiver.last_failed_at})"
                       if archiver.failing else
                       f"; the last segment archived is {archiver.last_archived_wal}")
                raise BackupError(f"WAL segment {segment}, which covers the target, was not "
                                  f"archived within {wait:g} s{why}: the target is refused")
    except DatabaseUnavailable as exc:
        # The primary is gone (the case restores are for): recovery takes what the
        # archive holds, and fails clearly if that ends before the target.
        return [f"the primary could not be asked to archive its latest WAL ({exc}); "
                "restoring from what the archive holds"]
    return []


async def _archived(conn: asyncpg.Connection, s: store.Site, segment: str,
                    timeout: float) -> bool:
    """Until repo1 holds `segment`, or the server's archiver reports it (or a later one
    of its timeline) done: archive-push succeeds only once every repository has it."""
    deadline = time.monotonic() + timeout
    while True:
        if store.archived(s, segment):
            return True
        last = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
        if facts.archived_through(last, segment):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


def _configure(s: store.Site, node: Node, goal: restore_plan.Target,
               repo: int | None = None) -> None:
    datadir = Path(node.datadir)
    nodes.configure(s.user, node, s.archive)
    auto = datadir / "postgresql.auto.conf"
    existing = auto.read_text() if auto.exists() else ""
    nodes.write(s.user, auto, restore_plan.auto_conf(existing, goal, s.archive, repo))
    (datadir / "standby.signal").unlink(missing_ok=True)
    nodes.write(s.user, datadir / "recovery.signal", "")


def log_path(s: store.Site, node: Node) -> Path:
    return s.home / "logs" / f"{node.name}.log"


async def start_node(s: store.Site, node: Node) -> int:
    log = log_path(s, node)
    log.parent.mkdir(parents=True, exist_ok=True)
    pid = s.user.spawn([s.pg("postgres"), "-D", node.datadir], log)
    node.pid = pid
    await process.wait_ready(Path(node.datadir), pid, log, timeout=s.settings.restore_timeout_s)
    return pid


async def _await_promoted(s: store.Site, node: Node) -> bool:
    """Until recovery reached its target and the server promoted itself; a recovery that
    fails ends the server, and its log says why. Asked over SQL as the superuser; if
    today's superuser password is refused (the backup predates a rotation), the control
    file tells when it is in production instead, and False is returned."""
    deadline = time.monotonic() + s.settings.restore_timeout_s
    password = _passwords(s)[SUPERUSER]
    conn: asyncpg.Connection | None = None
    try:
        while True:
            _still_recovering(s, node, deadline)
            if conn is None:
                try:
                    conn = await asyncpg.connect(host=node.host, port=node.port, user=SUPERUSER,
                                                 password=password, database="postgres",
                                                 timeout=5)
                except asyncpg.InvalidPasswordError:
                    while await _cluster_state(s, node) != "in production":
                        _still_recovering(s, node, deadline)
                        await asyncio.sleep(0.05)
                    return False
                except (OSError, TimeoutError, asyncpg.CannotConnectNowError,
                        asyncpg.PostgresConnectionError):
                    pass  # no connections before it is consistent
            if conn is not None and not await conn.fetchval("SELECT pg_is_in_recovery()"):
                return True
            await asyncio.sleep(0.02)
    finally:
        if conn is not None:
            await conn.close()


def _still_recovering(s: store.Site, node: Node, deadline: float) -> None:
    """Raise if the server died, or ran out of time, while recovering."""
    assert node.pid is not None
    log = log_path(s, node)
    if not process.alive(node.pid):
        raise BackupError(f"the restored server stopped during recovery: {process.tail(log)}")
    if time.monotonic() > deadline:
        raise BackupError(f"the restored server did not promote within "
                          f"{s.settings.restore_timeout_s:g} s: {process.tail(log)}")


async def _cluster_state(s: store.Site, node: Node) -> str:
    done = await asyncio.to_thread(s.user.run, [s.pg("pg_controldata"), "-D", node.datadir],
                                   env={"LC_ALL": "C"})
    for line in done.stdout.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    return ""


async def _adopt_current_passwords(s: store.Site, node: Node) -> int:
    """The backup predates a credential rotation: give its roles today's passwords (as
    SCRAM verifiers, in single-user mode, so no port is open meanwhile)."""
    assert node.pid is not None
    await process.stop(node.pid)
    statements = [f"ALTER ROLE {role} PASSWORD {literal(scram_verifier(pw))}"
                  for role, pw in _passwords(s).items() if pw]
    await asyncio.to_thread(s.user.run, [s.pg("postgres"), "--single", "-D", node.datadir,
                                         "postgres"], input="\n".join(statements) + "\n")
    return await start_node(s, node)


async def _abandon(s: store.Site, node: Node) -> None:
    """A restore that failed leaves nothing running and an empty directory; the server
    log stays for the post-mortem."""
    pid = process.postmaster_pid(Path(node.datadir)) or node.pid
    if pid is not None and process.alive(pid):
        await process.stop(pid)
    _empty(Path(node.datadir))
    store.remove(s.home / "restores" / node.name)


def _empty(directory: Path) -> None:
    if directory.is_dir():
        for child in directory.iterdir():
            if child.is_dir():
                store.remove(child)
            else:
                child.unlink(missing_ok=True)


def _passwords(s: store.Site) -> dict[str, str]:
    return NodeAdmin(s.settings).passwords()


def describe(s: store.Site, node: Node, home: Path) -> Settings:
    """A home for the restored node (cluster.json naming only it, the secrets linked) and
    settings whose every DSN points at it: what health and test-card are run with."""
    home.mkdir(parents=True, exist_ok=True)
    state = ClusterState(home=str(home), bindir=s.state.bindir, pg_version=s.state.pg_version,
                         os_user=s.state.os_user, database=s.state.database, status=READY,
                         nodes=[Node(node.name, "primary", node.port, node.datadir,
                                     node.host, node.pid)])
    save(state)
    link = home / "secrets.env"
    if not link.is_symlink():
        link.symlink_to(s.settings.secrets_path.resolve())
    return settings_for(s.settings, state, home, _passwords(s))


def settings_for(base: Settings, state: ClusterState, home: Path,
                 passwords: dict[str, str]) -> Settings:
    """`base` with every DSN taken from `state` (whatever the environment says)."""
    def full(dsn: str) -> SecretStr:
        password = passwords.get(username(dsn) or "", "")
        return SecretStr(with_password(dsn, password) if password else dsn)

    dsns = state.dsns()
    return base.with_topology(
        StateTopology(home, base.secrets_path),
        home=home, database_url=full(dsns["app"]), migration_url=full(dsns["owner"]),
        readonly_url=full(dsns["readonly"]), admin_url=full(dsns["admin"]),
        replica_urls=[full(d) for d in dsns["replicas"]],
        monitor_urls=[full(d) for d in dsns["monitor_nodes"]])


def _write_record(home: Path, record: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")


async def discard(settings: Settings, name: str) -> dict[str, Any]:
    """Stop a restored copy by PID and delete it (its directory and its home); refused
    for one that was repointed, which is the cluster's primary now."""
    s = store.site(settings)
    home = s.home / "restores" / name
    try:
        record = json.loads((home / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        raise UsageError(f"no restored copy named {name!r} in {s.home / 'restores'}") from None
    current = load(s.home)
    if record.get("repointed") or (current and any(n.name == name for n in current.nodes)):
        raise UsageError(f"{name} is part of the cluster now (repointed): use "
                         "`cardmint cluster down` to stop it")
    datadir = Path(record["restored_dir"])
    pid = process.postmaster_pid(datadir)
    mode = await process.stop(pid) if pid is not None else None
    store.remove(datadir)
    store.remove(home)
    return {"ok": True, "node": name, "stopped_pid": pid, "stop_mode": mode,
            "deleted": [str(datadir), str(home)]}
