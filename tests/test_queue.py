"""The intake job queue on the real cluster: priority order, leases taken over after a crash,
fencing against an overtaken worker, backoff to `failed`, and many workers at once. Each
test queues jobs of its own kind, so jobs other tests leave behind never get in the way."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from cardmint.db import Database
from cardmint.intake import queue
from cardmint.intake.queue import Backoff

# -- backoff (pure) ---------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(base_s=2, factor=2, cap_s=60, jitter=0)
    assert [b.delay_s(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert b.delay_s(10_000) == 60  # no overflow however many attempts


def test_backoff_jitter_adds_at_most_its_fraction() -> None:
    b = Backoff(base_s=10, factor=3, cap_s=1000, jitter=0.5)
    assert b.delay_s(2, rand=0.0) == 30
    assert b.delay_s(2, rand=0.999) == pytest.approx(44.985)
    assert b.delay_s(2, rand=7.0) == 45  # rand is clamped to [0, 1]


@pytest.mark.parametrize("kwargs", [{"base_s": 0}, {"factor": 0.5}, {"cap_s": 1, "base_s": 2},
                                    {"jitter": 1.5}])
def test_backoff_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
    with pytest.raises(ValueError):
        Backoff().delay_s(0)


# -- the queue --------------------------------------------------------------------------------


class Jobs:
    """Captures with one job each, of a kind no other test uses; deleted afterwards."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.kind = f"t{uuid.uuid4().hex[:12]}"
        self.capture_ids: list[int] = []

    async def add(self, n: int = 1, *, priority: int = 100, max_attempts: int = 5) -> list[int]:
        rows = await self.db.fetch(
            "WITH c AS (INSERT INTO captures (image_ref, status) "
            "           SELECT 'test://queue/' || g, 'queued' FROM generate_series(1, $1) g "
            "           RETURNING id) "
            "INSERT INTO processing_jobs (capture_id, kind, priority, max_attempts) "
            "SELECT id, $2, $3, $4 FROM c RETURNING id, capture_id",
            n, self.kind, priority, max_attempts)
        self.capture_ids += [r["capture_id"] for r in rows]
        return sorted(r["id"] for r in rows)

    async def claim(self, worker: str, now: datetime | None, *, lease_s: float = 30,
                    limit: int = 1) -> list[queue.Job]:
        return await queue.claim(self.db, worker, now=now, lease_s=lease_s, limit=limit,
                                 kinds=[self.kind])

    async def row(self, job_id: int) -> dict:
        return dict(await self.db.fetchrow(
            "SELECT j.*, c.status AS capture_status, c.error AS capture_error "
            "FROM processing_jobs j JOIN captures c ON c.id = j.capture_id WHERE j.id = $1",
            job_id))


@pytest.fixture
async def jobs(db: Database) -> AsyncIterator[Jobs]:
    j = Jobs(db)
    try:
        yield j
    finally:  # jobs go with their captures (ON DELETE CASCADE)
        await db.execute("DELETE FROM captures WHERE id = ANY($1::bigint[])", j.capture_ids)


async def db_now(db: Database) -> datetime:
    return await db.fetchval("SELECT now()")


async def test_claims_best_priority_first_and_only_ready_jobs(jobs: Jobs, db: Database) -> None:
    low = await jobs.add(2, priority=200)
    high = await jobs.add(1, priority=5)
    later = await jobs.add(1, priority=1)
    t = await db_now(db)
    await db.execute("UPDATE processing_jobs SET run_after = $2 WHERE id = $1", later[0],
                     t + timedelta(minutes=5))
    taken = await jobs.claim("w1", t, limit=10)
    assert [j.id for j in taken] == high + low  # `later` is not due yet
    assert all(j.attempts == 1 and j.locked_by == "w1" for j in taken)
    assert taken[0].locked_until == t + timedelta(seconds=30)
    assert (await jobs.row(high[0]))["capture_status"] == "processing"
    assert [j.id for j in await jobs.claim("w2", t + timedelta(minutes=5))] == later


async def test_enqueue_twice_is_one_open_job(jobs: Jobs, db: Database) -> None:
    await jobs.add(1)
    capture_id = jobs.capture_ids[0]
    assert await queue.enqueue(db, capture_id, kind=jobs.kind) is None
    again = await queue.enqueue(db, capture_id, kind=f"{jobs.kind}_other")
    assert again is not None
    assert await db.fetchval("SELECT count(*) FROM processing_jobs WHERE capture_id = $1",
                             capture_id) == 2


async def test_a_crashed_workers_job_is_taken_again_after_its_lease(jobs: Jobs,
                                                                    db: Database) -> None:
    [job_id] = await jobs.add(1)
    t = await db_now(db)
    [crashed] = await jobs.claim("crashed", t, lease_s=30)
    assert await jobs.claim("other", t + timedelta(seconds=29)) == []  # still leased
    [taken] = await jobs.claim("other", t + timedelta(seconds=30))
    assert taken.id == job_id and taken.attempts == 2 and taken.locked_by == "other"
    # the first worker comes back: its lease is gone, so is its right to finish the job
    assert await queue.complete(db, crashed, now=t) is False
    assert await queue.fail(db, crashed, "late", now=t) is None
    assert await queue.complete(db, taken, now=t + timedelta(seconds=31)) is True
    row = await jobs.row(job_id)
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert await queue.complete(db, taken) is False  # and only once


async def test_a_lease_lost_on_the_last_attempt_fails_the_job(jobs: Jobs, db: Database) -> None:
    [job_id] = await jobs.add(1, max_attempts=1)
    t = await db_now(db)
    await jobs.claim("crashed", t, lease_s=10)
    assert await jobs.claim("other", t + timedelta(seconds=11)) == []
    row = await jobs.row(job_id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "crashed" in row["last_error"] and row["finished_at"] is not None
    assert row["capture_status"] == "failed" and row["capture_error"] == row["last_error"]


async def test_failures_back_off_then_fail_after_max_attempts(jobs: Jobs, db: Database) -> None:
    [job_id] = await jobs.add(1, max_attempts=3)
    backoff = Backoff(base_s=10, factor=2, cap_s=100, jitter=0)
    t = await db_now(db)
    for attempt, delay in ((1, 10), (2, 20)):
        [job] = await jobs.claim("w", t)
        assert job.attempts == attempt
        assert await queue.fail(db, job, f"boom {attempt}", now=t, backoff=backoff) == "queued"
        row = await jobs.row(job_id)
        assert row["run_after"] == t + timedelta(seconds=delay)
        assert row["last_error"] == f"boom {attempt}" and row["capture_status"] == "queued"
        assert await jobs.claim("w", t + timedelta(seconds=delay - 1)) == []  # backing off
        t += timedelta(seconds=delay)
    [job] = await jobs.claim("w", t)
    assert await queue.fail(db, job, "boom 3", now=t, backoff=backoff) == "failed"
    row = await jobs.row(job_id)
    assert row["status"] == "failed" and row["attempts"] == 3 and row["finished_at"] == t
    assert row["capture_status"] == "failed" and row["capture_error"] == "boom 3"
    assert await jobs.claim("w", t + timedelta(days=1)) == []


async def test_concurrent_workers_never_complete_a_job_twice(jobs: Jobs, db: Database) -> None:
    ids = await jobs.add(200)
    completed: Counter[int] = Counter()
    claimed: Counter[int] = Counter()

    async def work(name: str) -> None:
        while taken := await jobs.claim(name, None, limit=3):
            for job in taken:
                claimed[job.id] += 1
                if await queue.complete(db, job):
                    completed[job.id] += 1

    await asyncio.gather(*(work(f"w{i}") for i in range(4)))
    assert sorted(completed) == ids and set(completed.values()) == {1}
    assert set(claimed.values()) == {1}  # SKIP LOCKED: no job was even handed out twice
    assert await db.fetchval("SELECT count(*) FROM processing_jobs WHERE kind = $1 "
                             "AND status = 'succeeded' AND attempts = 1", jobs.kind) == 200


async def test_an_overtaken_worker_loses_every_race_to_complete(jobs: Jobs, db: Database) -> None:
    ids = await jobs.add(50)
    t = await db_now(db)
    stale = await jobs.claim("slow", t, lease_s=5, limit=50)
    fresh = await jobs.claim("fast", t + timedelta(seconds=6), lease_s=60, limit=50)
    assert sorted(j.id for j in stale) == sorted(j.id for j in fresh) == ids
    # both finish at once; only the lease holder's completion may count
    pairs = zip(stale, fresh, strict=True)
    results = await asyncio.gather(*(queue.complete(db, j) for pair in pairs for j in pair))
    assert results == [False, True] * 50
