"""Asking a lab how it is: etcd's health and each Patroni's REST API, and waiting
(polling with a deadline) until it is whole."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from cardmint.cluster.patroni import proc
from cardmint.errors import ClusterError
from cardmint.ops.lab import net
from cardmint.ops.lab.state import (
    ENV_FILE,
    ETCD_CLIENT,
    Lab,
    LabHost,
)

UP_TIMEOUT_S = 120.0
POLL_S = 0.05


async def rest_get(host: LabHost, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """A member's REST answer (503 bodies included), or None if it does not answer."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            body = (await client.get(host.rest + path)).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"lab: {what} not within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def wait_etcd(lab: Lab, timeout: float = 60.0) -> None:
    async def healthy() -> bool:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for h in lab.hosts:
                try:
                    r = await client.get(f"http://{h.address}:{ETCD_CLIENT}/health")
                    if r.json().get("health") != "true":
                        return False
                except (httpx.HTTPError, ValueError):
                    return False
        return True

    await _until("etcd healthy on every host", healthy, timeout)


async def wait_leader(lab: Lab, name: str, timeout: float = UP_TIMEOUT_S) -> None:
    async def leads() -> bool:
        me = await rest_get(lab.host(name), "/patroni")
        return bool(me and me.get("role") in ("primary", "master") and
                    me.get("state") == "running")

    await _until(f"{name} leading", leads, timeout)


async def members(lab: Lab, via: LabHost | None = None) -> dict[str, dict[str, Any]]:
    """`GET /cluster` from `via` (else the first host that answers): members by name."""
    for host in [via] if via else lab.hosts:
        body = await rest_get(host, "/cluster")
        if body is not None:
            return {m["name"]: m for m in body.get("members") or []}
    return {}


async def current_leader(lab: Lab, via: LabHost | None = None) -> str:
    found = await members(lab, via)
    for name, m in found.items():
        if m.get("role") == "leader" and m.get("state") == "running":
            return name
    raise ClusterError(f"lab: no running leader ({found})")


async def wait_members(lab: Lab, timeout: float = UP_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Until every host's REST API tells the same story: one leader running, every other
    member streaming (with sync: one of them the synchronous standby). Every host is
    asked: a host just back from a partition may still answer from its own old view."""
    async def whole() -> dict[str, dict[str, Any]] | None:
        views = [await members(lab, h) for h in lab.hosts]
        leaders = {n for v in views for n, m in v.items() if m.get("role") == "leader"
                   and m.get("state") == "running"}
        if len(leaders) != 1:
            return None
        for found in views:
            others = [found.get(h.name) for h in lab.hosts if h.name not in leaders]
            if not all(m and m.get("state") == "streaming" for m in others):
                return None
            if lab.sync and not any(m.get("role") == "sync_standby" for m in found.values()):
                return None
        return views[0]

    found: dict[str, dict[str, Any]] = await _until("every member streaming", whole, timeout)
    return found


async def status(lab: Lab) -> dict[str, Any]:
    """Each host as it answers for itself (REST), whether its link is cut, and the
    cluster as each host's REST API sees it."""
    hosts = []
    for h in lab.hosts:
        me = await rest_get(h, "/patroni")
        hosts.append({"name": h.name, "address": h.address, "cut": net.is_cut(h.host),
                      "role": me.get("role") if me else None,
                      "state": me.get("state") if me else None,
                      "timeline": me.get("timeline") if me else None,
                      "patroni_pid": proc.find(Path(h.config)),
                      "etcd_pid": proc.find(Path(h.etcd_dir))})
    return {"home": lab.home, "sync": lab.sync, "hosts": hosts,
            "env_file": str(lab.path / ENV_FILE)}


