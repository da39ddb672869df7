"""The intake job queue, in PostgreSQL: enqueue, claim with FOR UPDATE SKIP LOCKED, complete,
fail with exponential backoff.

A claim is a lease: the job becomes `running`, `locked_by` the worker until `locked_until`.
A worker that crashes stops mid-job; once its lease has passed, the next claim takes the job
again. Every claim increments `attempts`, so (id, locked_by, attempts) names one lease and
serves as a fencing token: `complete` and `fail` act only while the job still carries it. A
worker that was overtaken after its lease expired therefore cannot complete the job a
second time; the worker runs `complete` first in the transaction that holds the job's
writes, and a lost lease rolls them all back.

Times: every function takes `now` (None = the database's clock), so tests drive leases and
backoff with an injected clock instead of sleeping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cardmint.intake.tx import Executor

CHANNEL = "cardmint_jobs"  # NOTIFY'd on enqueue so idle workers wake at once
IDENTIFY = "identify"
DEFAULT_PRIORITY = 100  # lower runs first
DEFAULT_MAX_ATTEMPTS = 5
MAX_ERROR = 2000  # characters of an error kept in last_error

_NOW = "coalesce($2::timestamptz, now())"

# The partial index ix_processing_jobs_ready covers status IN ('queued', 'running') ordered
# by (priority, run_after, id): the scan reads only open jobs, in claim order. A job whose
# lease expired on its last allowed attempt cannot be retried (attempts <= max_attempts):
# the same statement fails it instead of handing it out.
CLAIM_SQL = f"""
WITH picked AS (
    SELECT id FROM processing_jobs
    WHERE status IN ('queued', 'running')
      AND run_after <= {_NOW}
      AND (status = 'queued' OR locked_until <= {_NOW})
      AND ($4::text[] IS NULL OR kind = ANY($4::text[]))
    ORDER BY priority, run_after, id
    LIMIT $5
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE processing_jobs j
    SET status = CASE WHEN j.attempts < j.max_attempts THEN 'running' ELSE 'failed' END,
        attempts = least(j.attempts + 1, j.max_attempts),
        locked_by = CASE WHEN j.attempts < j.max_attempts THEN $1 ELSE j.locked_by END,
        locked_until = CASE WHEN j.attempts < j.max_attempts
                            THEN {_NOW} + make_interval(secs => $3) END,
        finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE {_NOW} END,
        last_error = CASE WHEN j.attempts < j.max_attempts THEN j.last_error
                          ELSE 'the lease of ' || coalesce(j.locked_by, '?')
                               || ' expired on the last attempt' END
    FROM picked WHERE j.id = picked.id
    RETURNING j.*
), moved AS (
    UPDATE captures c
    SET status = CASE WHEN t.status = 'running' THEN 'processing' ELSE 'failed' END,
        error = CASE WHEN t.status = 'running' THEN c.error ELSE t.last_error END,
        updated_at = now()
    FROM taken t
    WHERE c.id = t.capture_id AND c.status IN ('queued', 'processing')
)
SELECT id, capture_id, kind, priority, payload, attempts, max_attempts, locked_by,
       locked_until
FROM taken WHERE status = 'running'
ORDER BY priority, run_after, id
"""

COMPLETE_SQL = f"""
UPDATE processing_jobs
SET status = 'succeeded', finished_at = {_NOW}, locked_until = NULL
WHERE id = $1 AND locked_by = $3 AND attempts = $4 AND status = 'running'
RETURNING id
"""

FAIL_SQL = f"""
WITH j AS (
    UPDATE processing_jobs
    SET status = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,
        run_after = CASE WHEN attempts < max_attempts
                         THEN {_NOW} + make_interval(secs => $5) ELSE run_after END,
        finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE {_NOW} END,
        locked_by = NULL, locked_until = NULL, last_error = $6
    WHERE id = $1 AND locked_by = $3 AND attempts = $4 AND status = 'running'
    RETURNING id, capture_id, status, run_after
), c AS (
    UPDATE captures
    SET status = CASE WHEN j.status = 'failed' THEN 'failed' ELSE 'queued' END,
        error = $6, updated_at = now()
    FROM j WHERE captures.id = j.capture_id AND captures.status IN ('queued', 'processing')
)
SELECT status, run_after FROM j
"""

# The partial unique index allows one open job of a kind per capture: a second is a no-op.
ENQUEUE_SQL = """
INSERT INTO processing_jobs (capture_id, kind, priority, max_attempts, payload)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (capture_id, kind) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class Job:
    """A claimed job. (id, locked_by, attempts) is its lease."""

    id: int
    capture_id: int
    kind: str
    priority: int
    attempts: int
    max_attempts: int
    locked_by: str
    locked_until: datetime
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: base_s, base_s * factor, ... capped at cap_s, plus up to `jitter`
    of itself at random so that a burst of failures does not retry in lockstep."""

    base_s: float = 2.0
    factor: float = 2.0
    cap_s: float = 600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.factor >= 1 and self.cap_s >= self.base_s
                and 0 <= self.jitter <= 1):
            raise ValueError("backoff needs base_s > 0, factor >= 1, cap_s >= base_s and "
                             "jitter in [0, 1]")

    def delay_s(self, attempt: int, rand: float = 0.0) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); `rand` in [0, 1)
        picks the jitter."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        try:
            raw = min(self.cap_s, self.base_s * math.pow(self.factor, attempt - 1))
        except OverflowError:
            raw = self.cap_s
        return raw * (1.0 + self.jitter * min(max(rand, 0.0), 1.0))


async def enqueue(ex: Executor, capture_id: int, *, kind: str = IDENTIFY,
                  priority: int = DEFAULT_PRIORITY, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                  payload: dict[str, Any] | None = None) -> int | None:
    """Queue a job for a capture and wake the workers (the NOTIFY is delivered at commit).
    None if the capture already has an open job of this kind."""
    job_id: int | None = await ex.fetchval(ENQUEUE_SQL, capture_id, kind, priority,
                                           max_attempts, payload or {})
    if job_id is not None:
        await ex.execute("SELECT pg_notify($1, $2)", CHANNEL, kind)
    return job_id


async def claim(ex: Executor, worker_id: str, *, now: datetime | None = None,
                lease_s: float = 60.0, limit: int = 1,
                kinds: Sequence[str] | None = None) -> list[Job]:
    """Take up to `limit` ready jobs, best priority first, skipping those other workers hold.
    Ready: queued with run_after passed, or running under a lease that has expired."""
    if lease_s <= 0 or limit < 1:
        raise ValueError("lease_s must be positive and limit at least 1")
    rows = await ex.fetch(CLAIM_SQL, worker_id, now, lease_s,
                          list(kinds) if kinds is not None else None, limit)
    return [Job(id=r["id"], capture_id=r["capture_id"], kind=r["kind"], priority=r["priority"],
                attempts=r["attempts"], max_attempts=r["max_attempts"],
                locked_by=r["locked_by"], locked_until=r["locked_until"],
                payload=r["payload"] or {}) for r in rows]


async def complete(ex: Executor, job: Job, *, now: datetime | None = None) -> bool:
    """Mark the job succeeded if this lease still holds it; False if it was lost (then the
    caller's transaction must roll back whatever the job wrote)."""
    row = await ex.fetchrow(COMPLETE_SQL, job.id, now, job.locked_by, job.attempts)
    return row is not None


async def fail(ex: Executor, job: Job, error: str, *, now: datetime | None = None,
               backoff: Backoff = Backoff(), rand: float | None = None) -> str | None:
    """Record a failed attempt: back to `queued` with run_after pushed out by the backoff, or
    `failed` once max_attempts is used up (its capture then fails too). Returns the job's new
    status, or None if this lease no longer holds the job."""
    delay = backoff.delay_s(job.attempts, random.random() if rand is None else rand)
    row = await ex.fetchrow(FAIL_SQL, job.id, now, job.locked_by, job.attempts, delay,
                            (error or "error")[:MAX_ERROR])
    return row["status"] if row is not None else None
