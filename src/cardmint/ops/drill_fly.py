"""`cardmint drill failover` on Fly: the runbook's monthly drill as it reads there
("flyctl machine kill [primary-machine-id]", then check the new primary).

The same measures as the local drill: the write probe goes through the application's own
`Database` (CARDMINT_DATABASE_URL: the .flycast address from inside Fly, or `flyctl proxy`
from a workstation); the primary's machine is killed with flyctl; detection is the first
machine list that shows it stopped, promotion the first that names another running primary
(Fly's HA picks it); then pg_is_in_recovery() on the new primary, health, test-card; the
killed machine is started again and must come back as a replica. flyctl answers in about a
second, so detection and promotion here are measured to flyctl's resolution; the write
outage, measured by the probe, is the figure that counts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cardmint.cluster.fly import FlyCluster, primary_id
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.errors import CardmintError, ClusterError
from cardmint.ops.drill import (
    WARMUP_WRITES,
    WriteProbe,
    lost,
    outage,
    write_markdown,
)
from cardmint.ops.drill import _prepare_probe_table as prepare_probe_table
from cardmint.ops.drill import _store as store_report
from cardmint.ops.health import check_health
from cardmint.ops.maintenance import require_window
from cardmint.ops.testcard import run_test_card

FLY_RECOVERY_TIMEOUT_S = 300.0  # Fly's HA needs its health checks to fail first
FLY_POLL_S = 0.5


async def fly_drill(settings: Settings, *, force: bool = False, now: datetime | None = None,
                    fly: FlyCluster | None = None) -> dict[str, Any]:
    """Run the drill on the Fly app of CARDMINT_FLY_APP; the design's JSON contract."""
    require_window("the failover drill", force=force, now=now)
    fly = fly or FlyCluster.from_settings(settings)
    machines = await fly.machines()
    old = primary_id(machines)
    if old is None:
        raise ClusterError(f"{fly.app} has no running primary: a drill now would be a real "
                           "outage")
    if not any(m.get("id") != old and m.get("state") == "started" for m in machines):
        raise ClusterError(f"{fly.app} has no running replica: a drill now would be a real "
                           "outage")
    run = uuid.uuid4().hex[:12]
    report: dict[str, Any] = {
        "ok": False, "provider": fly.provider, "detection_s": None, "promotion_s": None,
        "write_outage_s": None, "acknowledged_writes": 0, "lost_writes": None,
        "old_primary": old, "new_primary": None, "health": None, "rejoined": False,
        "sync": None, "run": run, "started_at": datetime.now(UTC), "error": None,
        "detected_by": "flyctl machine list",
    }
    await prepare_probe_table(settings)
    db = Database(settings.model_copy(update={"pool_min": 0, "pool_max": 2}))
    await db.open()
    try:
        probe = WriteProbe(db, run)
        killed_at = await _exercise(fly, settings, old, probe, report)
        if killed_at is not None and report["new_primary"] is not None:
            rows = await db.fetch("SELECT id, timeline FROM drill.probe WHERE run = $1", run)
            timelines = {r["id"]: r["timeline"] for r in rows}
            report["timeline"] = max(timelines.values(), default=None)
            report.update(outage(probe.acks, timelines, killed_at, report["timeline"]))
            missing = lost(probe.acks, set(timelines))
            report["acknowledged_writes"] = len(probe.acks)
            report["lost_writes"] = len(missing)
            report["lost_ids"] = missing[:20]
            report["probe"] = {"attempts": probe.attempts, "failures": dict(probe.failures)}
        report["ok"] = bool(
            report["error"] is None and report.get("in_recovery_after") is False
            and report["lost_writes"] == 0 and report["health"] != "critical"
            and report.get("test_card") and report["rejoined"])
        report["finished_at"] = datetime.now(UTC)
        report["markdown"] = str(write_markdown(settings.home.resolve(), report))
        try:
            report["id"] = await store_report(db, report)
            await db.execute("DELETE FROM drill.probe WHERE run = $1", run)
        except CardmintError as exc:
            report["id"] = None
            report["error"] = report["error"] or f"report not stored: {exc}"
    finally:
        await db.close()
    return report


async def _exercise(fly: FlyCluster, settings: Settings, old: str, probe: WriteProbe,
                    report: dict[str, Any]) -> float | None:
    task = asyncio.create_task(probe.loop())
    killed_at = None
    try:
        await probe.until(lambda: len(probe.acks) >= WARMUP_WRITES)
        killed_at = time.monotonic()
        await fly.kill_machine(old)
        machines = await _until(fly, lambda ms: any(m.get("id") == old and
                                                   m.get("state") != "started" for m in ms),
                                f"machine {old} still runs after flyctl machine kill")
        detected_at = time.monotonic()
        report["detection_s"] = round(detected_at - killed_at, 4)
        machines = await _until(fly, lambda ms: primary_id(ms) not in (None, old),
                                f"Fly promoted no replica of {fly.app} after {old} was killed",
                                first=machines)
        report["promotion_s"] = round(time.monotonic() - detected_at, 4)
        report["new_primary"] = primary_id(machines)
        report["in_recovery_after"] = await probe.db.fetchval("SELECT pg_is_in_recovery()")
        count = len(probe.acks)
        await probe.until(lambda: len(probe.acks) > count, timeout=FLY_RECOVERY_TIMEOUT_S)
        health = await check_health(settings)
        report["health"] = health.status
        report["health_findings"] = [f"{c['name']} {c['node'] or ''} {c['status']}: "
                                     f"{c['detail']}" for c in health.to_dict()["checks"]
                                     if c["status"] != "ok"]
        card = await run_test_card(settings)
        report["test_card"] = card.ok
        rejoin = await fly.rejoin(old)
        report["rejoined"] = True
        report["rejoin"] = rejoin.to_dict()
    except CardmintError as exc:
        report["error"] = str(exc)
    finally:
        probe.stop()
        await asyncio.gather(task, return_exceptions=True)
    return killed_at


async def _until(fly: FlyCluster, done: Any, failure: str,
                 first: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Machine lists until `done(machines)`, within FLY_RECOVERY_TIMEOUT_S."""
    deadline = time.monotonic() + FLY_RECOVERY_TIMEOUT_S
    machines = first if first is not None else await fly.machines()
    while not done(machines):
        if time.monotonic() > deadline:
            raise ClusterError(failure)
        await asyncio.sleep(FLY_POLL_S)
        machines = await fly.machines()
    return machines
