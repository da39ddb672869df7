"""`cluster resize`: the derived settings (pure), and a rolling resize of a 1-replica cluster
while the application's Database writes, losing no acknowledged write."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardmint.cluster.local.resize import derive, format_kb, parse_memory, resize
from cardmint.db import Database
from cardmint.errors import UsageError
from cardmint.ops.drills.probe import WriteProbe, lost
from cardmint.ops.maintenance import require_window
from support import TestCluster, migrated_cluster, poll


def test_parse_memory_and_format() -> None:
    assert parse_memory("4GB") == 4 * 1024 * 1024
    assert parse_memory("1.5G") == 1536 * 1024
    assert parse_memory("512") == parse_memory("512MiB") == 512 * 1024
    with pytest.raises(UsageError):
        parse_memory("lots")
    assert [format_kb(k) for k in (1024 * 1024, 2048, 1310)] == ["1GB", "2MB", "1310kB"]


def test_derive_from_memory_and_cpu() -> None:
    got = derive(4 * 1024 * 1024, None, 200)
    assert got == {"shared_buffers": "1GB", "effective_cache_size": "3GB",
                   "work_mem": "5242kB", "maintenance_work_mem": "256MB"}
    big = derive(256 * 1024 * 1024, 16, 100)
    assert big["maintenance_work_mem"] == "2GB"  # capped
    assert big["max_worker_processes"] == "20" and big["max_parallel_workers"] == "16"
    assert big["max_parallel_workers_per_gather"] == "4"
    small = derive(256 * 1024, 1, 200)
    assert small["shared_buffers"] == "64MB" and small["max_worker_processes"] == "8"
    assert small["max_parallel_workers_per_gather"] == "1"
    with pytest.raises(UsageError):
        derive(128 * 1024, None, 200)
    with pytest.raises(UsageError):
        derive(1024 * 1024, 0, 200)


def test_resize_is_refused_outside_a_window() -> None:
    tuesday = datetime(2026, 12, 1, 12, tzinfo=UTC)
    with pytest.raises(UsageError, match="--force"):
        require_window("resize", force=False, now=tuesday)
    require_window("resize", force=True, now=tuesday)
    done = subprocess.run([sys.executable, "-m", "cardmint", "cluster", "resize", "--memory",
                           "1GB", "--home", "/nonexistent-cardmint"],
                          capture_output=True, text=True, timeout=60)
    if "maintenance window" in done.stderr + done.stdout:  # not inside a window right now
        assert done.returncode == 3


@pytest.mark.slow
async def test_rolling_resize_keeps_writing(work_root: Path, template_dir: Path) -> None:
    async with migrated_cluster(work_root, template_dir, "resize", probe=True) as tc:
        db = Database(tc.settings(pool_min=0, pool_max=4))
        await db.open(monitor=False)
        try:
            await _resize_under_writes(tc, db)
        finally:
            await db.close()


async def _resize_under_writes(tc: TestCluster, db: Database) -> None:
    """A rolling resize under the write probe: switchover-level gap at most, nothing lost,
    the settings in effect everywhere, and the command agrees."""
    probe = WriteProbe(db, uuid.uuid4().hex[:12])
    task = asyncio.create_task(probe.loop())
    try:
        await probe.until(lambda: len(probe.acks) >= 20)
        report = await resize(tc.cluster, "1GB", cpu=2)
        count = len(probe.acks)
        await probe.until(lambda: len(probe.acks) >= count + 20)
    finally:
        probe.stop()
        await task
    state = tc.cluster.state()
    assert report.primary_before != report.primary_after == state.primary.name
    by_node = {n.node: n for n in report.nodes}
    assert by_node[report.primary_before].restarted_by == "switchover + rejoin"
    assert by_node[report.primary_after].changed["shared_buffers"] == ["128MB", "256MB"]
    for node in state.nodes:  # in effect everywhere, each node asked itself
        conn = await tc.admin(node.name)
        try:
            assert await conn.fetchval("SHOW shared_buffers") == "256MB"
            assert await conn.fetchval("SHOW effective_cache_size") == "768MB"
        finally:
            await conn.close()
    # the application saw a switchover-level gap at most, and lost nothing it was told
    gaps = [b - a for (_, a), (_, b) in zip(probe.acks, probe.acks[1:], strict=False)]
    # the replica restart costs writes nothing; the switchover is the whole outage
    bound = report.switchover["duration_s"] + 2.0  # + a probe interval and pool expiry
    assert max(gaps) <= bound, (max(gaps), report.switchover)
    assert report.write_outage_s is not None and report.write_outage_s <= bound
    primary = await tc.admin("primary")
    try:
        present = {r["id"] for r in await primary.fetch(
            "SELECT id FROM drill.probe WHERE run = $1", probe.run)}
    finally:
        await primary.close()
    assert lost(probe.acks, present) == []
    # the command, forced, on the resized cluster: JSON out, no secret in it
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "resize", "--memory",
                         "1GB", "--force", "--home", str(tc.home), "--json"],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["ok"] and again["settings"]["max_worker_processes"] == "8"  # kept
    assert all(n["changed"] == {} for n in again["nodes"])
    assert not any(p and p in done.stdout + done.stderr
                   for p in tc.cluster.passwords().values())
    await poll(lambda: tc.cluster.state().primary.name == report.primary_before)
