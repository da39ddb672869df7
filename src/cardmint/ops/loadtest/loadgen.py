"""A closed-loop HTTP load generator: N clients, each sending its next request as soon as the
last one answered (as wrk does), over HTTP/1.1 keep-alive connections (httpx).

Bounded twice: it stops at its deadline or after `max_requests`, whichever comes first.
It sends only to loopback. Latency is measured per request, from just before it is sent to
its last body byte; requests that began during the warm-up are sent but not counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from cardmint.errors import UsageError


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str] | None = None
    json: Any = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Operation:
    name: str
    weight: float
    build: Callable[[random.Random], Request]
    ok: frozenset[int] = frozenset({200, 201})
    # Told each answer (None: none came) so a builder can follow state the server keeps,
    # e.g. the version an inventory item's next If-Match must name.
    answered: Callable[[Request, httpx.Response | None], None] | None = None


@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)  # seconds, counted requests only
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        requests = len(ordered)
        errors = sum(self.errors.values())
        return {
            "requests": requests,
            "throughput_rps": round(requests / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "errors": errors,
            "error_rate_pct": round(100.0 * errors / requests, 4) if requests else 0.0,
            "error_kinds": dict(self.errors),
            "mean_ms": round(1000 * sum(ordered) / requests, 3) if requests else None,
            "p50_ms": quantile_ms(ordered, 0.50),
            "p95_ms": quantile_ms(ordered, 0.95),
            "p99_ms": quantile_ms(ordered, 0.99),
            "max_ms": round(1000 * ordered[-1], 3) if ordered else None,
        }


def quantile_ms(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted latencies in seconds, in ms."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return round(1000 * ordered[rank - 1], 3)


def check_loopback(url: str) -> None:
    """Load is sent to this machine only."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise UsageError(f"{url}: the load generator sends to loopback addresses only")


def client(base_url: str, concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    """One keep-alive connection per concurrent client; no proxies from the environment."""
    check_loopback(base_url)
    return httpx.AsyncClient(
        base_url=base_url, http1=True, http2=False, trust_env=False, timeout=timeout_s,
        limits=httpx.Limits(max_connections=concurrency,
                            max_keepalive_connections=concurrency))


async def drive(base_url: str, operations: Sequence[Operation], *, concurrency: int,
                duration_s: float, warmup_s: float = 0.0, max_requests: int = 1_000_000,
                timeout_s: float = 10.0, seed: int = 7) -> dict[str, Any]:
    """Run the mix and return per-operation and overall figures for the measured window."""
    if not operations:
        raise UsageError("no operation to run")
    if concurrency < 1 or duration_s <= 0 or max_requests < 1:
        raise UsageError("concurrency, duration and max_requests must be positive")
    cumulative = list(itertools.accumulate(op.weight for op in operations))
    stats = {op.name: OpStats() for op in operations}
    sent = 0
    began = time.perf_counter()
    measure_from = began + warmup_s
    deadline = measure_from + duration_s

    async def worker(rng: random.Random, http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests:
            start = time.perf_counter()
            if start >= deadline:
                return
            sent += 1
            op = rng.choices(operations, cum_weights=cumulative)[0]
            req = op.build(rng)
            error = None
            response = None
            try:
                response = await http.request(req.method, req.path, params=req.params,
                                              json=req.json, headers=req.headers)
                if response.status_code not in op.ok:
                    error = f"status {response.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            if op.answered is not None:
                op.answered(req, response)
            if start >= measure_from:
                stats[op.name].latencies.append(time.perf_counter() - start)
                if error:
                    stats[op.name].errors[error] += 1

    # A client (one keep-alive connection) per worker: a pool shared by all the workers
    # costs several times the CPU per request (httpcore's pool locking; measured).
    clients = [client(base_url, 1, timeout_s) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(worker(random.Random(seed + i), http)
                               for i, http in enumerate(clients)))
    finally:
        await asyncio.gather(*(http.aclose() for http in clients))
    ended = time.perf_counter()
    # the window ends at the deadline, or earlier when the request budget ran out
    elapsed = max(1e-9, min(ended, deadline) - max(began, min(measure_from, ended)))
    total = OpStats()
    for s in stats.values():
        total.latencies.extend(s.latencies)
        total.errors.update(s.errors)
    return {"elapsed_s": round(elapsed, 3), "sent": sent,
            "operations": {name: s.summary(elapsed) for name, s in stats.items()},
            "total": total.summary(elapsed)}
