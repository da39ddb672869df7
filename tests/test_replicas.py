"""Read replicas added and removed on a running cluster while a read load runs through the
application's Database; the inactive-slot health warning."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cardmint.cluster.local.replicas import next_name
from cardmint.cluster.state import ClusterState, Node
from cardmint.db import Database
from cardmint.errors import CardmintError, UsageError
from cardmint.ops.health.report import check_health
from support import poll, postgres_pids, start_cluster

pytestmark = pytest.mark.slow


class ReadLoad:
    """Tasks reading `inet_server_port()` with stale_ok: which node served each read."""

    def __init__(self, db: Database, tasks: int = 4) -> None:
        self.db, self.ports, self.failures, self.count = db, {}, [], 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(tasks)]

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                port = await self.db.fetchval("SELECT inet_server_port()", stale_ok=True)
            except CardmintError as exc:
                self.failures.append(repr(exc))
            else:
                self.ports[port] = self.ports.get(port, 0) + 1
                self.count += 1
            await asyncio.sleep(0.001)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def _gone(datadir: Path, home: Path) -> bool:
    """No directory left and no server process naming it."""
    return not datadir.exists() and not any(
        str(datadir).encode() in Path(f"/proc/{p}/cmdline").read_bytes()
        for p in postgres_pids(home))


def test_next_name_skips_taken(tmp_path: Path) -> None:
    state = ClusterState(home=str(tmp_path), bindir="", pg_version="15", os_user=None,
                         nodes=[Node("node1", "primary", 1, ""), Node("node3", "replica", 2, "")])
    (tmp_path / "nodes" / "node4").mkdir(parents=True)
    assert next_name(state, tmp_path) == "node5"


async def test_add_then_remove_under_read_load(work_root: Path, template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "scale", replicas=1)
    db = Database(tc.settings(replica_check_interval_s=0.1, pool_min=1, pool_max=4))
    load = None
    try:
        await db.open(monitor=True)
        state = tc.cluster.state()
        first = state.replicas[0]
        load = ReadLoad(db)
        await poll(lambda: load.ports.get(first.port, 0) >= 20)

        added = await tc.cluster.add_replica()
        assert added.streaming and added.node == "node3"
        new = tc.cluster.state().node(added.node)
        assert new.role == "replica" and new.port == added.port
        # the running Database took it up from cluster.json and spreads reads to it
        await poll(lambda: load.ports.get(new.port, 0) >= 20, timeout=20)
        assert load.ports.get(first.port, 0) > 20

        # removal through the command, the load still running
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint.cli.main", "cluster",
                             "remove-replica", new.name, "--home", str(tc.home), "--json"],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["ok"] and report["slot_dropped"] and report["drained"]
        served_before = load.ports.get(new.port, 0)
        after = load.count
        await poll(lambda: load.count >= after + 200)
        assert load.ports.get(new.port, 0) == served_before  # nothing reached it since
        await load.stop()
        assert load.failures == []

        assert [r.name for r in db.replicas] == [f"127.0.0.1:{first.port}"]
        assert _gone(Path(new.datadir), tc.home)
        admin = await tc.admin(database="postgres")
        try:
            slots = await admin.fetch("SELECT slot_name, active FROM pg_replication_slots")
        finally:
            await admin.close()
        assert {r["slot_name"]: r["active"] for r in slots} == {first.slot: True}
        with pytest.raises(UsageError, match="primary"):
            await tc.cluster.remove_replica(state.primary.name)
    finally:
        if load is not None and not load._stop.is_set():
            await load.stop()
        await db.close()
        await tc.cluster.down(purge=True)
    assert postgres_pids(tc.home) == set()


async def test_inactive_slot_warns(work_root: Path, template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "slots", replicas=1)
    try:
        report = await check_health(tc.settings())
        assert report.check("replication_slots").status == "ok"
        admin = await tc.admin(database="postgres")
        try:
            await admin.execute("SELECT pg_create_physical_replication_slot('forgotten', true)")
            slot = (await check_health(tc.settings())).check("replication_slots")
            assert slot.status == "warn" and slot.severity == "P2" and slot.value == 1
            assert "forgotten" in slot.detail
            await admin.execute("SELECT pg_drop_replication_slot('forgotten')")
        finally:
            await admin.close()
        assert (await check_health(tc.settings())).check("replication_slots").status == "ok"
    finally:
        await tc.cluster.down(purge=True)
