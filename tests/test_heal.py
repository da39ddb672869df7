"""The monitor inside `cardmint serve` restarts a local node whose postmaster died, and
records it; it leaves a fenced node alone (issue 18 item 5)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cardmint.api.app import create_app
from cardmint.api.background import run_monitor_in
from cardmint.cluster.pg import process
from cardmint.cluster.state import FENCED
from cardmint.ops.monitor.heal import RESTARTED, heal_round
from support import TestCluster, migrated_cluster, poll, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def heal_cluster(work_root: Path, template_dir: Path) -> AsyncIterator[TestCluster]:
    async with migrated_cluster(work_root, template_dir, "heal", replicas=1) as tc:
        yield tc


def kill(datadir: str) -> int:
    pid = process.postmaster_pid(Path(datadir))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def restarted(datadir: str, old: int) -> bool:
    pid = process.postmaster_pid(Path(datadir))
    return pid is not None and pid != old and process.postmaster_status(Path(datadir)) in (
        "ready", "standby")


async def test_serve_restarts_a_dead_primary_and_replica_and_records_it(
        heal_cluster: TestCluster) -> None:
    tc = heal_cluster
    settings = tc.settings(heal_interval_s=0.1, monitor_interval_s=3600)
    api = create_app(settings)
    run_monitor_in(api, backups=False)
    state = tc.cluster.state()
    async with serving(api) as client:
        assert (await client.get("/health/primary")).status_code == 200
        killed = {n.name: kill(n.datadir) for n in state.nodes}  # both at once
        for node in state.nodes:
            await poll(lambda: restarted(node.datadir, killed[node.name]),  # noqa: B023
                       timeout=30)
        await poll(lambda: _status(client, "/health/primary", 200), timeout=30)
    conn = await tc.admin()
    try:
        rows = await conn.fetch("SELECT node, severity, status, message FROM alerts "
                                "WHERE name = $1", RESTARTED)
    finally:
        await conn.close()
    assert {r["node"] for r in rows} == set(killed)
    assert all(r["severity"] == "P1" and r["status"] == "resolved" for r in rows)
    assert any("primary" in r["message"] for r in rows)


async def _status(client: object, path: str, code: int) -> bool:
    return (await client.get(path)).status_code == code  # type: ignore[attr-defined]


async def test_a_fenced_node_is_left_alone(heal_cluster: TestCluster) -> None:
    tc = heal_cluster
    report = await tc.cluster.failover()  # the primary stopped and fenced
    try:
        fenced = tc.cluster.state().node(report.old_primary)
        assert fenced.role == FENCED
        assert await heal_round(tc.settings()) == []
        assert process.postmaster_pid(Path(fenced.datadir)) is None
    finally:
        await tc.cluster.rejoin(report.old_primary)
