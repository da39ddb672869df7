"""The three-host lab (issue 18): network namespaces on a bridge of their own, each host
running etcd, Patroni and PostgreSQL; links cut and healed under a writer that records
every acknowledged write and a checker that fails on any moment with two writable
primaries. One lab for the module; the scenarios run in sequence on it, each leaving it
whole. Timings are reported (bench/lab.py takes medians), bounds are generous."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cardmint import secretfile
from cardmint.api.app import create_app
from cardmint.cluster.patroni import conf
from cardmint.config import Settings
from cardmint.ops.lab import lab as labs
from cardmint.ops.lab import net, scenarios, state
from cardmint.ops.lab.state import Lab
from cardmint.ops.lab.watch import Checker, Writer, prepare
from support import poll, serving

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


# A lab per scenario: seen twice in four full runs, the lab healed after the leader's
# partition left the next scenario without a leader (the old leader in archive recovery,
# the others' member keys gone; not yet explained). Each failure is rehearsed on a whole
# lab, at ~25 s of set-up each.
@pytest.fixture
async def running(work_root: Path) -> AsyncIterator[Running]:
    labs.sweep()  # whatever a killed earlier run left
    home = work_root / f"lab-{uuid.uuid4().hex[:8]}"
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


def runs(seen: list[tuple[float, int, str | None]],
         began: float) -> list[tuple[int, float, int]]:
    """(code, seconds after `began` it started, how many in a row): for failure messages."""
    out: list[tuple[int, float, int]] = []
    for at, code, _ in seen:
        if out and out[-1][0] == code:
            out[-1] = (code, out[-1][1], out[-1][2] + 1)
        else:
            out.append((code, round(at - began, 2), 1))
    return out


async def _ok(client: Any) -> bool:
    return bool((await client.get("/health/primary")).status_code == 200)


def no_two_primaries(r: Running) -> None:
    assert r.checker.rounds > 10
    assert r.checker.violations == [], r.checker.violations[:5]


@dataclass
class Answers:
    """What `cardmint serve`'s /health/primary said, polled all along: (when it was
    asked, code, Retry-After)."""

    seen: list[tuple[float, int, str | None]]


# The longest a request may take in the gap: the pool's client bound (statement timeout
# 10 s, a little more) and one retry's connect (the acquire bound, 2 s), with room.
ANSWER_WITHIN_S = 16.0


async def poll_primary(client: Any, answers: Answers, stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = time.monotonic()
        try:
            response = await client.get("/health/primary", timeout=ANSWER_WITHIN_S)
            code, retry = response.status_code, response.headers.get("Retry-After")
        except Exception:  # a request that never answered counts as no answer (0)
            code, retry = 0, None
        answers.seen.append((asked, code, retry))
        await asyncio.sleep(0.2)  # the polling rate, not a wait for state


def app_settings(lab: Lab, home: Path) -> Settings:
    """`cardmint serve` pointed at all three hosts: lab.env's DSNs, no cluster.json."""
    env = secretfile.read(lab.path / state.ENV_FILE)
    return Settings(_env_file=None, home=home,  # type: ignore[call-arg]
                    database_url=env["CARDMINT_DATABASE_URL"],
                    replica_urls=env["CARDMINT_REPLICA_URLS"].split(","),
                    pool_min=1, pool_max=4)


@needs
async def test_the_partitioned_leader_demotes_the_majority_elects_nothing_acknowledged_is_lost(
        running: Running, work_root: Path) -> None:
    api = create_app(app_settings(running.lab, work_root / "lab-app"))
    answers, stop = Answers([]), asyncio.Event()
    async with serving(api) as client:
        await poll(lambda: _ok(client))
        poller = asyncio.create_task(poll_primary(client, answers, stop))
        began = time.monotonic()
        recovered = 0.0

        async def finds_the_new_leader() -> None:
            # the same app, never restarted, answers for the new leader while the old
            # one is still cut off: nothing but the election made it recover
            nonlocal recovered
            await poll(lambda: _ok(client), timeout=30)
            recovered = time.monotonic()

        try:
            result = await scenarios.partition_leader(running.lab, running.writer,
                                                      running.checker,
                                                      before_heal=finds_the_new_leader)
        finally:
            stop.set()
            await poller
        await poll(lambda: _ok(client), timeout=30)  # and after the heal
    print("partition leader:", result.to_dict(), "serve /health/primary:",
          runs(answers.seen, began))
    # during the gap the app answered every request, 503 with Retry-After, never a hang
    # or a 500 (a request on a pooled connection to the cut leader ends at the client's
    # bound; new connections skip the unreachable host)
    gap = [(code, retry) for asked, code, retry in answers.seen if began < asked < recovered]
    assert any(code == 503 for code, _ in gap), runs(answers.seen, began)
    assert all(code in (200, 503) for code, _ in gap), runs(answers.seen, began)
    assert all(retry for code, retry in gap if code == 503)
    assert all(code in (200, 503) for _, code, _ in answers.seen), runs(answers.seen, began)
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
    # the degrade rule: commits wait until the lost standby's member key expires (ttl),
    # then Patroni names the other replica synchronous
    assert result.write_stall_s < conf.TTL_S + 15
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
