"""`cardmint cluster sync-guard`: commits never hang forever on a lost synchronous standby.

A watchdog of its own, not a round of `cardmint monitor`: its bound (`sync_degrade_after_s`,
5 s) is far shorter than the monitor's interval, it needs the superuser (ALTER SYSTEM),
and it must keep working when the application cannot commit. Each round it asks the
primary for commits waiting on SyncRep and for streaming standbys; past the bound it
empties `synchronous_standby_names` (the waiting commits return at once) and raises the
P1 alert `sync_degraded`, or with `sync_strict` only alerts; once a standby streams again
it names the replicas again and resolves the alert. The alert is written with
`synchronous_commit = local`, so it gets out even while commits hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cardmint.cluster.local import LocalCluster, syncrep
from cardmint.cluster.state import READY
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.errors import CardmintError, ClusterError

log = logging.getLogger("cardmint.syncguard")

ALERT = "sync_degraded"
SEVERITY = "P1"
RUNBOOK_SECTION = "System Overview › Database Architecture"
RECOMMENDATION = ("Bring the standby back (`cardmint cluster status`, `cardmint cluster up`, or "
                  "`cardmint cluster rejoin NODE`); synchronous replication resumes by itself "
                  "once it streams. Until then a lost primary loses recent commits.")


@dataclass
class Round:
    at: datetime
    primary: str
    action: str
    reason: str
    configured: str  # synchronous_standby_names as found
    streaming: list[str]
    waiting_commits: int
    oldest_wait_s: float | None
    alert: str | None = None  # raised | resolved | failed: ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LOCK_KEY = 0x73796E63  # pg_try_advisory_lock: the one guard that acts, cluster-wide


class SyncGuard:
    """Rounds against the local cluster's primary; remembers what the rules need."""

    def __init__(self, settings: Settings, *, strict: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.cluster = LocalCluster(settings)
        self.strict = settings.sync_strict if strict is None else strict
        self._clock = clock
        self._missing_since: float | None = None
        self._alert_open: bool | None = None  # None: not known, look

    async def round(self) -> Round:
        state = self.cluster.state()
        if state is None or state.status != READY:
            raise ClusterError(f"no ready cluster in {self.cluster.home}")
        primary = state.primary
        conn = await self.cluster.admin.connect(primary, "postgres", timeout=3)
        try:
            obs, decision = await syncrep.enforce(
                conn, state, self._missing_since, self._clock(),
                bound_s=self.settings.sync_degrade_after_s, strict=self.strict)
        finally:
            await conn.close()
        self._missing_since = decision.missing_since
        done = Round(at=datetime.now(UTC), primary=primary.name, action=decision.action,
                     reason=decision.reason, configured=obs.configured,
                     streaming=list(obs.streaming), waiting_commits=obs.waiting,
                     oldest_wait_s=obs.oldest_wait_s)
        if decision.action in (syncrep.DEGRADE, syncrep.ALERT):
            log.warning("synchronous replication %s: %s",
                        "degraded to asynchronous" if decision.action == syncrep.DEGRADE
                        else "stuck (strict mode: commits keep waiting)", decision.reason)
            done.alert = await self._alert(primary.name, decision)
        elif decision.ok and self._alert_open is not False:
            done.alert = await self._resolve()
        return done

    async def run(self, *, once: bool = False, rounds: int | None = None,
                  on_round: Callable[[Round], None] | None = None,
                  stop: asyncio.Event | None = None,
                  lead: Callable[[], Awaitable[bool]] | None = None) -> list[Round]:
        """Round after round every `sync_guard_interval_s` (one with `once`) until `stop`
        is set; a round that cannot reach the primary is logged and the next one tries
        again. With `lead`, only rounds for which it answers True act (one guard acts
        cluster-wide when several processes run one)."""
        done: list[Round] = []
        count = 0
        stop = stop or asyncio.Event()
        while not stop.is_set():
            count += 1
            try:
                if lead is None or await lead():
                    done.append(await self.round())
                    if on_round is not None:
                        on_round(done[-1])
                    del done[:-100]  # a watchdog runs for months: keep the last rounds only
            except CardmintError as exc:
                if once:
                    raise
                log.warning("sync guard round failed: %s", exc)
            if once or (rounds is not None and count >= rounds):
                return done
            try:
                await asyncio.wait_for(stop.wait(), self.settings.sync_guard_interval_s)
            except TimeoutError:
                pass
        return done

    async def _alert(self, node: str, decision: syncrep.Decision) -> str:
        verb = "dropped to asynchronous" if decision.action == syncrep.DEGRADE else \
            "strict: commits keep waiting"
        message = f"synchronous replication {verb}: {decision.reason}"
        try:
            async with self._alerts_connection() as conn:
                inserted = await conn.fetchval(
                    "INSERT INTO alerts (name, node, severity, status, message, "
                    "runbook_section, recommendation, started_at, last_seen_at) "
                    "VALUES ($1, $2, $3, 'firing', $4, $5, $6, now(), now()) "
                    "ON CONFLICT (name, node) WHERE status = 'firing' "
                    "DO UPDATE SET last_seen_at = now() RETURNING (xmax = 0)",
                    ALERT, node, SEVERITY, message, RUNBOOK_SECTION, RECOMMENDATION)
        except CardmintError as exc:
            log.error("cannot record the %s alert: %s", ALERT, exc)
            return f"failed: {exc}"
        self._alert_open = True
        return "raised" if inserted else "firing"

    async def _resolve(self) -> str | None:
        try:
            async with self._alerts_connection() as conn:
                done = await conn.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_at = now(), "
                    "last_seen_at = now() WHERE name = $1 AND status = 'firing'", ALERT)
        except CardmintError as exc:
            log.error("cannot resolve the %s alert: %s", ALERT, exc)
            return f"failed: {exc}"
        self._alert_open = False
        return "resolved" if done != "UPDATE 0" else None

    @asynccontextmanager
    async def _alerts_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The application's role, with commits that do not wait for a standby: the
        alert must get out while other commits hang (strict mode)."""
        dsn = secret(self.settings.database_url)
        if not dsn:
            raise ClusterError("no application DSN to record alerts with")
        async with connection(dsn, self.settings, application="cardmint-syncguard") as conn:
            await conn.execute("SET synchronous_commit = local")
            yield conn
