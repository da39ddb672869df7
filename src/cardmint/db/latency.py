"""An in-process latency histogram: constant memory, quantiles within 2.5 %.

Buckets grow by 5 % from 10 µs to 2 minutes, so recording is one log() and an increment,
and p50/p95/p99 are read off the counts at any time. `reset()` starts a new window for
those quantiles (a probe measures just its own queries).

Beside them it keeps lifetime counts at fixed bounds (`BOUNDS`, seconds) that `reset()`
never touches: what `/metrics` exposes as a Prometheus histogram, whose counters must
only grow. The bounds include the runbook's 100 ms and 150 ms, so "p95 over 150 ms"
computed by Prometheus is exact at the threshold rather than interpolated across it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

_LOW_MS = 0.01
_HIGH_MS = 120_000.0
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = int(math.log(_HIGH_MS / _LOW_MS) / _LOG_GROWTH) + 2

# Prometheus bucket upper bounds in seconds (+Inf is implied).
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    def __init__(self) -> None:
        self._lifetime = [0] * (len(BOUNDS) + 1)  # per bound, then above the last
        self.lifetime_count = 0
        self.lifetime_sum_s = 0.0
        self.reset()

    def reset(self) -> None:
        """Start a new window for the quantiles; the lifetime counts go on."""
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0

    def record(self, seconds: float) -> None:
        ms = seconds * 1000.0
        if ms <= _LOW_MS:
            index = 0
        else:
            index = min(_BUCKETS - 1, int(math.log(ms / _LOW_MS) / _LOG_GROWTH) + 1)
        self._counts[index] += 1
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        self._lifetime[bisect_left(BOUNDS, seconds)] += 1  # le: a value on a bound is in it
        self.lifetime_count += 1
        self.lifetime_sum_s += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, observations at or below it) since the start,
        ending with (inf, every observation): a Prometheus histogram's buckets."""
        out, seen = [], 0
        for bound, n in zip((*BOUNDS, math.inf), self._lifetime, strict=True):
            seen += n
            out.append((bound, seen))
        return out

    def quantile(self, q: float) -> float | None:
        """The q-quantile in milliseconds (the middle of its bucket), None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if index == 0:
                    return _LOW_MS
                low = _LOW_MS * _GROWTH ** (index - 1)
                return min(self.max_ms, low * (1 + _GROWTH) / 2)
        return self.max_ms

    def snapshot(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {
            "count": self.count,
            "mean_ms": r(self.total_ms / self.count) if self.count else None,
            "p50_ms": r(self.quantile(0.50)),
            "p95_ms": r(self.quantile(0.95)),
            "p99_ms": r(self.quantile(0.99)),
            "max_ms": r(self.max_ms) if self.count else None,
        }
