"""`--repoint`: make a verified restored copy the primary of `$CARDMINT_HOME`'s cluster.

The runbook's "update DATABASE_URL": the local engine's settings come from cluster.json,
so rewriting it to name the restored node is what moves the application (it picks the
new DSNs up on its next settings load). The old nodes are stopped by PID first, so
nothing can still write to them, and leave cluster.json; they are listed in
`retired.json` with their data directories, which are kept for the post-mortem.

The restored copy then joins the cluster's pgBackRest repositories: its recovery settings are reset,
archiving is switched on (a restart), and the WAL it wrote on its new timeline since
promotion is queued for archiving, its timeline history first. Finally a fresh base
backup is taken, so the new timeline can itself be restored.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import asyncpg

from cardmint.clock import utc
from cardmint.cluster.local import LocalCluster
from cardmint.cluster.pg import backrest, nodes, process
from cardmint.cluster.state import READY, SUPERUSER, Node, load, save
from cardmint.dsn import redact
from cardmint.errors import BackupError, CardmintError
from cardmint.ops.backups import restore_plan, store

RETIRED = "retired.json"
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
TIMELINE_SQL = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


async def repoint(s: store.Site, node: Node, *, reason: str) -> dict[str, Any]:
    from cardmint.ops.backups import backup, pitr

    began = time.monotonic()
    cluster = LocalCluster(s.settings)
    warnings: list[str] = []
    # The lock `cluster up` and `down` take: no command sees a half-switched cluster.
    with cluster.lock():
        state = load(s.home)
        if state is None:
            raise BackupError(f"no cluster in {s.home} to repoint")
        passwords = cluster.passwords()
        conn = await _connect(node, passwords[SUPERUSER])
        try:
            timeline = await conn.fetchval(TIMELINE_SQL)
            _check_history(s, node, timeline)
            stopped = await _stop_old(state.nodes)
            for name in restore_plan.RECOVERY:
                await conn.execute(f"ALTER SYSTEM RESET {name}")
        finally:
            await conn.close()
        assert node.pid is not None
        await process.stop(node.pid)
        queued = _queue_for_archive(s, node, timeline)
        node.pid = await pitr.start_node(s, node)
        retired = [n for n in state.nodes]
        state.nodes = [Node(node.name, "primary", node.port, node.datadir, node.host, node.pid)]
        state.sync = False
        state.status = READY
        save(state)
        _retire(s, retired, reason=reason, replaced_by=node.name)
        # pgBackRest now backs up the new primary; its stanza is made again where a
        # repository lost it (repo1, with the old host), and accepted where it matches
        backrest.write_config(s.home, s.settings.secrets_path, s.user,
                              backrest.Pg(node.datadir, node.port))
        await asyncio.to_thread(backrest.stanza_create, s.home, s.user, passwords[SUPERUSER])
    history = f"{timeline:08X}.history"
    if timeline > 1 and not await store.await_archived(s, history,
                                                      s.settings.backup_archive_wait_s):
        warnings.append(f"{history} was not archived within "
                        f"{s.settings.backup_archive_wait_s:g} s: check `backup status`")
    if os.environ.get("CARDMINT_DATABASE_URL"):
        warnings.append("CARDMINT_DATABASE_URL is set in this environment and wins over "
                        "cluster.json: point it at "
                        f"{redact(state.dsns()['app'])}")
    fresh = pitr.settings_for(s.settings, state, s.home, passwords)
    try:
        made = await backup.create(fresh)
        backup_id = made["id"]
    except CardmintError as exc:
        backup_id = None
        warnings.append(f"the first backup of the new primary failed: {exc}; run "
                        "`cardmint backup create`")
    return {"ok": True, "primary": node.name, "port": node.port, "timeline": timeline,
            "stopped": stopped, "retired": [n.name for n in retired],
            "wal_queued": queued, "backup": backup_id, "warnings": warnings,
            "duration_s": round(time.monotonic() - began, 3)}


async def _connect(node: Node, password: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(host=node.host, port=node.port, user=SUPERUSER,
                                     password=password, database="postgres", timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot reach the restored node: {redact(str(exc))}") from exc


def _check_history(s: store.Site, node: Node, timeline: int) -> None:
    """The restored copy chose its timeline as one above the archive's newest when it
    promoted; if the old cluster has since made a timeline of that number too, the two
    histories would mix in the archive."""
    name = f"{timeline:08X}.history"
    ours = Path(node.datadir) / "pg_wal" / name
    if not ours.exists() or not store.archived(s, name):
        return
    theirs = Path(node.datadir) / f".archived-{name}"
    try:
        s.user.run(backrest.base_argv(s.home, "archive-get", f"--pg1-path={node.datadir}",
                                      name, str(theirs)))
        same = theirs.read_bytes() == ours.read_bytes()
    except (CardmintError, OSError):
        same = False
    finally:
        theirs.unlink(missing_ok=True)
    if not same:
        raise BackupError(f"timeline {timeline} exists in the archive with another history: "
                          "restore again (it will pick a new timeline); not repointed")


async def _stop_old(old: list[Node]) -> list[dict[str, Any]]:
    stopped = []
    for n in sorted(old, key=lambda n: n.role != "primary"):
        pid = process.postmaster_pid(Path(n.datadir))
        if pid is not None:
            stopped.append({"node": n.name, "pid": pid, "mode": await process.stop(pid)})
    return stopped


def _queue_for_archive(s: store.Site, node: Node, timeline: int) -> list[str]:
    """Mark the history file and the completed segments of the new timeline `.ready`, as
    the server would have with archiving on. The segment of the last checkpoint (the
    server is stopped: the end of its WAL) is still being filled and is left alone."""
    datadir = Path(node.datadir)
    out = s.user.run([s.pg("pg_controldata"), "-D", str(datadir)], env={"LC_ALL": "C"}).stdout
    match = re.search(r"Latest checkpoint's REDO WAL file:\s+(\S+)", out)
    if not match:
        raise BackupError("pg_controldata did not name the latest checkpoint's WAL file")
    current = match[1]
    pg_wal = datadir / "pg_wal"
    names = sorted(f.name for f in pg_wal.iterdir()
                   if SEGMENT.match(f.name) and int(f.name[:8], 16) == timeline
                   and f.name < current)
    if (pg_wal / f"{timeline:08X}.history").exists():
        names.insert(0, f"{timeline:08X}.history")
    queued = []
    status = pg_wal / "archive_status"
    for name in names:
        if not (status / f"{name}.done").exists() and not (status / f"{name}.ready").exists():
            nodes.write(s.user, status / f"{name}.ready", "")
            queued.append(name)
    return queued


def _retire(s: store.Site, old: list[Node], *, reason: str, replaced_by: str) -> None:
    path = s.home / RETIRED
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        entries = []
    at = utc().isoformat()
    entries += [{"name": n.name, "role": n.role, "port": n.port, "datadir": n.datadir,
                 "retired_at": at, "reason": reason, "replaced_by": replaced_by}
                for n in old]
    path.write_text(json.dumps(entries, indent=2) + "\n")
