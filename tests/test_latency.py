import random

import pytest

from cardmint.db.latency import LatencyHistogram


def test_quantiles_within_a_few_percent() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(0, 1) / 1000 for _ in range(20_000)]  # seconds, ~1 ms
    h = LatencyHistogram()
    for s in samples:
        h.record(s)
    ordered = sorted(samples)
    for q in (0.5, 0.95, 0.99):
        exact_ms = ordered[int(q * len(ordered)) - 1] * 1000
        assert h.quantile(q) == pytest.approx(exact_ms, rel=0.03)
    snap = h.snapshot()
    assert snap["count"] == 20_000
    assert snap["max_ms"] == pytest.approx(max(samples) * 1000, abs=0.001)


def test_empty_extremes_and_reset() -> None:
    h = LatencyHistogram()
    assert h.quantile(0.95) is None
    assert h.snapshot()["p95_ms"] is None
    h.record(0.0)
    h.record(500.0)  # beyond the top bucket: still counted, max kept
    assert h.quantile(0.0) == pytest.approx(0.01)
    assert h.quantile(1.0) <= 500_000
    with pytest.raises(ValueError):
        h.quantile(1.5)
    h.reset()
    assert h.count == 0
