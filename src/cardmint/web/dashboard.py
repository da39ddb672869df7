"""The operations dashboard (the runbook's "internal dashboard"), for admin tokens.

`GET /dashboard` is the page; `GET /dashboard/fragment` is its panels alone, which
`static/dashboard.js` fetches every few seconds and swaps in. Both render one
`ops.dashboard.snapshot`; viewers within `SHARED_S` of each other share one, so a wall of
screens costs the database no more than one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from cardmint.clock import format_duration
from cardmint.errors import DatabaseUnavailable
from cardmint.ops.monitor.dashboard import snapshot
from cardmint.web.charts import line_chart
from cardmint.web.render import render
from cardmint.web.session import Session, current_session, require_page

router = APIRouter(include_in_schema=False)

REFRESH_S = 5
SHARED_S = 2.0
CHART_W, CHART_H = 520, 180


class _Shared:
    """The latest snapshot of one app, and a lock so concurrent viewers wait for one
    gathering instead of starting their own."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.taken = float("-inf")
        self.snap: dict[str, Any] | None = None


async def _snapshot(request: Request) -> dict[str, Any]:
    state = request.app.state
    shared = getattr(state, "dashboard_shared", None)
    if shared is None:
        shared = state.dashboard_shared = _Shared()
    async with shared.lock:
        if shared.snap is None or time.monotonic() - shared.taken > SHARED_S:
            shared.snap = await snapshot(state.settings, state.db)
            shared.taken = time.monotonic()
        return shared.snap


async def _session(request: Request) -> Session | None:
    """The signed-in session. With no primary, which is when this page is needed most, a
    replica may vouch for the token; the primary is asked first, so a revocation counts
    at once whenever it can."""
    try:
        return await current_session(request)
    except DatabaseUnavailable:
        return await current_session(request, stale_ok=True)


async def _admin(request: Request) -> Session:
    """`require_page("admin")`, with the replica fallback of `_session`."""
    try:
        return await require_page("admin")(request)
    except DatabaseUnavailable:
        return await require_page("admin", stale_ok=True)(request)


def _charts(snap: dict[str, Any]) -> dict[str, Markup]:
    series, limits = snap["series"], snap["thresholds"]
    if not series["available"]:
        return {}
    window = {"start": series["since"], "end": series["until"], "width": CHART_W,
              "height": CHART_H}
    return {
        "latency": line_chart(
            series["latency_ms"], unit="ms", threshold=limits["latency_p95_warn_ms"],
            threshold_label=f"p95 target {limits['latency_p95_warn_ms']:g} ms",
            title="Query latency p50, p95, p99 over the last hour", ident="chart-latency",
            **window),
        "pool": line_chart(
            series["pool_pct"], unit="%", threshold=limits["pool_warn_pct"],
            threshold_label=f"normal below {limits['pool_warn_pct']:g} %",
            title="Connection pool utilization over the last hour", ident="chart-pool",
            **window),
    }


def _helpers(snap: dict[str, Any]) -> dict[str, Any]:
    """Relative times as the person on call reads them, against the snapshot's clock."""
    now: datetime = snap["taken_at"]

    def relative(moment: datetime | None) -> str:
        if moment is None:
            return "—"
        delta = moment - now
        return f"in {format_duration(delta)}" if delta.total_seconds() > 0 \
            else f"{format_duration(-delta)} ago"

    def seconds(value: float | None) -> str:
        return "—" if value is None else format_duration(value)

    return {"relative": relative, "seconds": seconds}


def _context(snap: dict[str, Any], refresh_s: int) -> dict[str, Any]:
    return {"snap": snap, "charts": _charts(snap), "refresh_s": refresh_s, **_helpers(snap)}


@router.get("/dashboard")
async def dashboard(request: Request, refresh: int = Query(REFRESH_S, ge=2, le=300),
                    session: Session = Depends(_admin)) -> HTMLResponse:
    snap = await _snapshot(request)
    return render(request, "dashboard.html", **_context(snap, refresh))


@router.get("/dashboard/fragment")
async def fragment(request: Request,
                   refresh: int = Query(REFRESH_S, ge=2, le=300)) -> HTMLResponse:
    # a script asks for this: an answer it can act on, not a redirect to the sign-in page
    session = await _session(request)
    if session is None:
        raise HTTPException(401, "sign in again to keep the dashboard up to date")
    if not session.allows("admin"):
        raise HTTPException(403, "the dashboard needs a token with the admin scope")
    snap = await _snapshot(request)
    return render(request, "dashboard_panels.html", **_context(snap, refresh))
