"""The frame every engine's failover drill shares: the probe table and the write probe,
the engine's exercise (kill, detect, promote, check, rejoin) with the probe writing
throughout, then the tally, the verdict and the report (Markdown under
`$CARDMINT_HOME/drills/` and a row in `drills`).

The write outage is the gap between the last acknowledged write on the old timeline and
the first on the new one, as the application saw it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cardmint.cluster.engine import RejoinReport
from cardmint.cluster.state import refreshed
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.errors import CardmintError
from cardmint.ops.drills.probe import WriteProbe, lost, outage, prepare_probe_table
from cardmint.ops.health.report import check_health
from cardmint.ops.health.testcard import run_test_card

WARMUP_WRITES = 40
CONTRACT = ("ok", "provider", "detection_s", "promotion_s", "write_outage_s",
            "acknowledged_writes", "lost_writes", "old_primary", "new_primary", "health",
            "rejoined")


@dataclass
class Drill:
    """One drill in progress: what an engine's exercise works with and fills in."""

    settings: Settings
    probe: WriteProbe
    report: dict[str, Any]
    killed_at: float | None = None  # monotonic; set by the exercise when it kills

    async def check_and_rejoin(self, rejoin: Callable[[], Awaitable[RejoinReport]]) -> None:
        """Once promoted: the application writes again; health and test-card on the new
        topology; the old primary rejoins; writes go on being acknowledged (sync too)."""
        await self.probe.more(1)
        await check_after_failover(self.settings, self.report)
        self.report["rejoin"] = (await rejoin()).to_dict()
        self.report["rejoined"] = True
        await self.probe.more(10)


Exercise = Callable[[Drill], Awaitable[None]]


async def run_drill(settings: Settings, *, provider: str, old_primary: str,
                    sync: bool | None, home: Path, exercise: Exercise) -> dict[str, Any]:
    """The frame every engine's drill shares: the probe table and the write probe, the
    engine's `exercise` (kill, detect, promote, check, rejoin) with the probe writing
    throughout, then the tally, the verdict and the report (Markdown and `drills`)."""
    started_at = datetime.now(UTC)
    run = uuid.uuid4().hex[:12]
    await prepare_probe_table(settings)
    report: dict[str, Any] = {
        "ok": False, "provider": provider, "detection_s": None, "promotion_s": None,
        "write_outage_s": None, "acknowledged_writes": 0, "lost_writes": None,
        "old_primary": old_primary, "new_primary": None, "health": None, "rejoined": False,
        "sync": sync, "run": run, "started_at": started_at, "error": None,
    }
    # pool_min 0: asyncpg would log a traceback each time it fails to refill the floor
    db = Database(settings.model_copy(update={"pool_min": 0, "pool_max": 2}))
    await db.open()
    try:
        drill = Drill(settings, WriteProbe(db, run), report)
        task = asyncio.create_task(drill.probe.loop())
        try:
            await drill.probe.more(WARMUP_WRITES)
            await exercise(drill)
        except CardmintError as exc:
            report["error"] = str(exc)
        finally:
            drill.probe.stop()
            await asyncio.gather(task, return_exceptions=True)
        if drill.killed_at is not None and report["new_primary"] is not None:
            await _tally(db, drill.probe, drill.killed_at, report)
            report["health_after_rejoin"] = (await check_health(refreshed(settings))).status
        report["ok"] = bool(
            report["error"] is None and report.get("in_recovery_after") is False
            and report["lost_writes"] == 0 and report.get("health_severity") != "P0"
            and report.get("test_card") and report["rejoined"])
        report["why"] = explain(report)
        report["finished_at"] = datetime.now(UTC)
        report["markdown"] = str(write_markdown(home, report))
        try:
            report["id"] = await store_report(db, report)
            await db.execute("DELETE FROM drill.probe WHERE run = $1", run)
        except CardmintError as exc:  # the Markdown report is there all the same
            report["id"] = None
            report["error"] = report["error"] or f"report not stored: {exc}"
    finally:
        await db.close()
    return report


async def check_after_failover(settings: Settings, report: dict[str, Any]) -> None:
    """Health and test-card against the new topology, into `report`."""
    fresh = refreshed(settings)
    health = await check_health(fresh)
    report["health"] = health.status
    # the old primary is down until it rejoins: that P1 is the drill's own doing; an
    # outage left behind (P0: no primary, writes failing) is what fails the drill
    report["health_severity"] = health.severity
    report["health_findings"] = [f"{c['name']} {c['node'] or ''} {c['status']}: "
                                 f"{c['detail']}" for c in health.to_dict()["checks"]
                                 if c["status"] != "ok"]
    card = await run_test_card(fresh)
    report["test_card"] = card.ok
    report["test_card_failures"] = [f"{st.name}: {st.detail}" for st in card.steps
                                    if not st.ok]


async def _tally(db: Database, probe: WriteProbe, killed_at: float,
                 report: dict[str, Any]) -> None:
    """Every acknowledged id must be on the new primary; the outage from the acks."""
    rows = await db.fetch("SELECT id, timeline FROM drill.probe WHERE run = $1", report["run"])
    timelines = {r["id"]: r["timeline"] for r in rows}
    if report.get("timeline") is None:  # Fly's machine list names no timeline
        report["timeline"] = max(timelines.values(), default=None)
    missing = lost(probe.acks, set(timelines))
    report.update(outage(probe.acks, timelines, killed_at, report["timeline"]))
    report["acknowledged_writes"] = len(probe.acks)
    report["lost_writes"] = len(missing)
    report["lost_ids"] = missing[:20]
    report["probe"] = {"attempts": probe.attempts, "interval_ms": probe.interval_s * 1000,
                       "failures": dict(probe.failures)}
    report["outage_budget_s"] = budget(report)


def explain(report: dict[str, Any]) -> list[str]:
    """Why a drill failed, in words an operator acts on (empty when it passed)."""
    if report["ok"]:
        return []
    why = []
    lost_writes = report.get("lost_writes") or 0
    if lost_writes and not report.get("sync"):
        why.append(
            f"{lost_writes} acknowledged write(s) lost: with asynchronous replication the "
            "primary acknowledges a commit before a replica has it, so killing it can lose "
            "its last writes. That is what asynchronous means, not a fault of the failover. "
            "For a drill that must lose nothing, run a synchronous cluster: "
            "`cardmint cluster up --sync` (a new cluster), or `cardmint cluster add-replica "
            "--sync` then `cardmint cluster remove-replica` the asynchronous one.")
    elif lost_writes:
        why.append(f"{lost_writes} acknowledged write(s) lost although replication is "
                   "synchronous: a real data-loss bug; keep the report and open an incident "
                   "(`cardmint incident open --severity P0 --title 'drill lost writes'`).")
    if report.get("error"):
        why.append(f"the drill stopped: {report['error']}")
    if report.get("in_recovery_after") is not False and report.get("new_primary"):
        why.append("the new primary was still in recovery: the promotion did not finish")
    if report.get("health_severity") == "P0":
        why.append("an outage remained after the failover (health P0): `cardmint health`")
    if report.get("new_primary") and not report.get("test_card"):
        why.append("the test card failed after the failover: `cardmint test-card`")
    if report.get("new_primary") and not report.get("rejoined"):
        why.append(f"the old primary did not rejoin: `cardmint cluster rejoin "
                   f"{report['old_primary']}`")
    return why


def budget(report: dict[str, Any]) -> dict[str, float] | None:
    """Where the time from the kill to the first write on the new primary went: detection,
    the failover's steps up to promotion, and the rest, the application's reconnection."""
    steps = (report.get("failover") or {}).get("timings_s") or {}
    total, detection = report.get("kill_to_first_write_s"), report.get("detection_s")
    if total is None or detection is None:
        return None
    out = {"detection": detection}
    out |= {k: steps[k] for k in ("fence", "choose", "promote") if k in steps}
    out["application"] = round(total - sum(out.values()), 4)
    return out


async def store_report(db: Database, report: dict[str, Any]) -> int:
    async with db.transaction() as tx:
        return int(await tx.fetchval(
            "INSERT INTO drills (kind, started_at, finished_at, ok, report) "
            "VALUES ('failover', $1, $2, $3, $4) RETURNING id",
            report["started_at"], report["finished_at"], report["ok"], plain(report)))


def plain(value: Any) -> Any:
    """JSON-safe (datetimes as ISO 8601), as jsonb stores it."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat()
                                 if isinstance(v, datetime) else str(v)))


def render_markdown(report: dict[str, Any]) -> str:
    """The drill as the runbook asks to document it."""
    def fmt(value: Any) -> str:
        return "—" if value is None else (f"{value:.3f} s" if isinstance(value, float)
                                          else str(value))

    lines = [
        f"# Failover drill {report['started_at']:%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"**Result: {'PASS' if report['ok'] else 'FAIL'}** — provider {report['provider']}, "
        f"{'synchronous' if report.get('sync') else 'asynchronous'} replication.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Old primary (SIGKILL) | {report['old_primary']} |",
        f"| New primary | {report['new_primary']} (timeline {report.get('timeline')}) |",
        f"| Detection | {fmt(report['detection_s'])} (by {report.get('detected_by')}) |",
        f"| Promotion | {fmt(report['promotion_s'])} |",
        f"| Application write outage | {fmt(report['write_outage_s'])} |",
        f"| Kill to first write | {fmt(report.get('kill_to_first_write_s'))} |",
        f"| Acknowledged writes | {report['acknowledged_writes']} |",
        f"| Acknowledged writes lost | {report['lost_writes']} |",
        f"| pg_is_in_recovery() on the new primary | {report.get('in_recovery_after')} |",
        f"| Health after failover | {report['health']} ({report.get('health_severity') or '-'}) |",
        f"| Test card | {'ok' if report.get('test_card') else 'FAILED'} |",
        f"| Old primary rejoined | {report['rejoined']} "
        f"({(report.get('rejoin') or {}).get('method', '—')}) |",
        f"| Health after rejoin | {report.get('health_after_rejoin')} |",
        "",
        *(["## Why it failed", "", *(f"- {w}" for w in report.get("why") or []), ""]
          if report.get("why") else []),
        "## Where the time went",
        "",
    ]
    lines.append("From the kill to the first acknowledged write on the new primary:")
    lines.append("")
    for step, seconds in (report.get("outage_budget_s") or {}).items():
        lines.append(f"- {step}: {seconds * 1000:.1f} ms")
    after = {k: v for k, v in ((report.get("failover") or {}).get("timings_s") or {}).items()
             if k not in (report.get("outage_budget_s") or {})}
    if after:
        lines += ["", "After promotion (off the write path): " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in after.items())]
    failures = (report.get("probe") or {}).get("failures")
    if failures:
        refused = ", ".join(f"{n} × {kind}" for kind, n in failures.items())
        lines += ["", f"Probe writes refused during the outage: {refused}"]
    return "\n".join(lines) + "\n"


def write_markdown(home: Path, report: dict[str, Any], *, kind: str = "failover",
                   text: str | None = None) -> Path:
    """The drill's report as `drills/<kind>-<start>-<run>.md` under the cluster home
    (`text`: a report rendered by another drill; default, the failover drill's)."""
    folder = home / "drills"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{report['started_at']:%Y%m%dT%H%M%SZ}-{report['run']}.md"
    path.write_text(render_markdown(report) if text is None else text)
    return path
