"""The three-host lab (issue 18): network namespaces on a bridge of their own, each host
running etcd, Patroni and PostgreSQL; links cut and healed under a writer that records
every acknowledged write and a checker that fails on any moment with two writable
primaries. One lab for the module; the scenarios run in sequence on it, each leaving it
whole. Timings are reported (bench/lab.py takes medians), bounds are generous."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cardmint.cluster.patroni import conf
from cardmint.config import Settings
from cardmint.ops.lab import lab as labs
from cardmint.ops.lab import net, scenarios
from cardmint.ops.lab.lab import Lab
from cardmint.ops.lab.watch import Checker, Writer, prepare

pytestmark = pytest.mark.slow

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
PATRONI = SETTINGS.patroni_bin / "patroni"
ETCD = shutil.which(SETTINGS.etcd)
# Patroni's promise: a leader that cannot renew its key demotes before the key expires
# (ttl 20 s), and the majority promotes only after it has expired
DEMOTE_BOUND_S = conf.TTL_S

needs = pytest.mark.skipif(
    os.geteuid() != 0 or not PATRONI.is_file() or ETCD is None or shutil.which("ip") is None,
    reason="the lab needs root (network namespaces), `ip`, Patroni and etcd (make patroni)")


@dataclass
class Running:
    lab: Lab
    writer: Writer
    checker: Checker


@pytest.fixture(scope="module")
async def running(work_root: Path) -> AsyncIterator[Running]:
    labs.sweep()  # whatever a killed earlier run left
    home = work_root / "lab"
    try:
        lab = await labs.up(SETTINGS, home, count=3, sync=True)
        await prepare(lab)
        writer, checker = Writer(lab), Checker(lab)
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(checker.run())]
        try:
            yield Running(lab, writer, checker)
        finally:
            writer.stop()
            checker.stop()
            await asyncio.gather(*tasks)
    finally:
        if os.environ.get("CMLAB_KEEP_LOGS"):  # to read Patroni's logs after a failure
            shutil.copytree(home / "logs", os.environ["CMLAB_KEEP_LOGS"], dirs_exist_ok=True)
        await labs.down(home)
        assert net.namespaces() == [] and net.links() == []


def no_two_primaries(r: Running) -> None:
    assert r.checker.rounds > 10
    assert r.checker.violations == [], r.checker.violations[:5]


@needs
async def test_the_partitioned_leader_demotes_the_majority_elects_nothing_acknowledged_is_lost(
        running: Running) -> None:
    result = await scenarios.partition_leader(running.lab, running.writer, running.checker)
    print("partition leader:", result.to_dict())
    assert result.new_leader != result.old_leader
    assert result.demotion_s < DEMOTE_BOUND_S
    assert result.demotion_s < result.detection_s  # demoted before anyone could take over
    # synchronous mode: whatever the isolated leader acknowledged after the cut (a commit
    # its standby had confirmed just before) is on the new leader too
    assert result.lost == 0
    assert result.rewound  # the old leader rejoined in place: pg_rewind, no base backup
    log = running.lab.patroni_log(running.lab.host(result.old_leader)).read_text()
    assert "pg_rewind" in log
    no_two_primaries(running)


@needs
async def test_a_partitioned_replica_does_not_stop_writes(running: Running) -> None:
    result = await scenarios.partition_replica(running.lab, running.writer)
    print("partition replica:", result.to_dict())
    assert result.leader_kept
    assert result.write_stall_s < 30  # Patroni names the other replica synchronous
    no_two_primaries(running)


@needs
async def test_lost_etcd_quorum_keeps_one_primary_in_failsafe_mode(running: Running) -> None:
    assert ETCD is not None
    result = await scenarios.lose_quorum(running.lab, running.writer, ETCD, watch_s=25)
    print("quorum loss:", result.to_dict())
    # failsafe_mode: every Patroni still answers the leader, so it stays the one primary
    assert result.leader_kept_writing and result.writes_during > 0
    no_two_primaries(running)


@needs
async def test_the_whole_cluster_restarts_with_one_leader_and_nothing_lost(
        running: Running) -> None:
    assert ETCD is not None
    result = await scenarios.restart_all(running.lab, running.writer, PATRONI, ETCD)
    print("restart:", result.to_dict())
    assert result.leaders_after == 1 and result.lost == 0
    no_two_primaries(running)
