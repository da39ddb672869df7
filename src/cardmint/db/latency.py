"""An in-process latency histogram: constant memory, quantiles within 2.5 %.

Buckets grow by 5 % from 10 µs to 2 minutes, so recording is one log() and an increment,
and p50/p95/p99 are read off the counts at any time.
"""

from __future__ import annotations

import math
from typing import Any

_LOW_MS = 0.01
_HIGH_MS = 120_000.0
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = int(math.log(_HIGH_MS / _LOW_MS) / _LOG_GROWTH) + 2


class LatencyHistogram:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
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
