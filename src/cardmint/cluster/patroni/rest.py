"""Patroni's REST API, as the Patroni engine asks it: what a member says about itself
(`GET /patroni`), the cluster as the DCS has it (`GET /cluster`), and the operations
(`POST /switchover`, `/failover`, `/reinitialize`) with the engine's credentials.

Errors from httpx are translated here into ClusterError, the one place it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from cardmint.errors import ClusterError

GET_TIMEOUT_S = 2.0
# A switchover or failover answers once the new leader holds the lock; Patroni itself
# gives up after max(10 s, loop_wait) * 2 of polling.
POST_TIMEOUT_S = 60.0
PRIMARY_ROLES = ("leader", "primary", "master", "standby_leader")


@dataclass(frozen=True)
class Member:
    """One member as `GET /cluster` lists it."""

    name: str
    role: str  # leader | sync_standby | replica | quorum_standby ...
    state: str  # running | streaming | stopped | starting | crashed ...
    host: str | None
    port: int | None
    timeline: int | None
    lag: int | str | None  # bytes behind the leader, or "unknown"

    @property
    def is_leader(self) -> bool:
        return self.role in PRIMARY_ROLES

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "state": self.state, "timeline": self.timeline,
                "lag": self.lag}


def url(port: int, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}{path}"


async def get(port: int, path: str, *, timeout: float = GET_TIMEOUT_S) -> dict[str, Any]:
    """The JSON Patroni answers (it answers 503 with a body for a member that is not what
    a health endpoint asks for; that body is what we want too)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url(port, path))
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return body
    except (httpx.HTTPError, ValueError) as exc:
        raise ClusterError(f"Patroni's REST API on port {port} did not answer {path}: "
                           f"{type(exc).__name__}") from exc


async def post(port: int, path: str, body: dict[str, Any], auth: tuple[str, str], *,
               timeout: float = POST_TIMEOUT_S) -> tuple[int, str]:
    """(HTTP status, Patroni's message) for an operation."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url(port, path), json=body, auth=auth)
    except httpx.HTTPError as exc:
        raise ClusterError(f"Patroni's REST API on port {port} did not answer {path}: "
                           f"{type(exc).__name__}") from exc
    return response.status_code, response.text.strip()


def members(cluster: dict[str, Any]) -> dict[str, Member]:
    """`GET /cluster`'s members by name."""
    out = {}
    for m in cluster.get("members") or []:
        out[m["name"]] = Member(
            name=m["name"], role=m.get("role", ""), state=m.get("state", ""),
            host=m.get("host"), port=m.get("port"), timeline=m.get("timeline"),
            lag=m.get("lag"))
    return out


def leader(found: dict[str, Member]) -> str | None:
    return next((m.name for m in found.values() if m.is_leader), None)
