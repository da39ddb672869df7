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


def test_lifetime_buckets_are_cumulative_and_survive_a_reset() -> None:
    from cardmint.db.latency import BOUNDS

    h = LatencyHistogram()
    for seconds in (0.0005, 0.001, 0.1, 0.1001, 0.15, 7.0):
        h.record(seconds)
    h.reset()  # a probe's new window: the quantiles start again, Prometheus's counts do not
    h.record(0.2)
    buckets = dict(h.cumulative())
    assert h.count == 1 and h.lifetime_count == 7
    assert buckets[0.001] == 2  # a value on a bound counts in it (le)
    assert buckets[0.1] == 3 and buckets[0.15] == 5 and buckets[0.25] == 6
    assert buckets[BOUNDS[-1]] == 6 and buckets[float("inf")] == 7
    counts = [n for _, n in h.cumulative()]
    assert counts == sorted(counts)
    assert h.lifetime_sum_s == pytest.approx(0.0005 + 0.001 + 0.1 + 0.1001 + 0.15 + 7.0 + 0.2)
    assert {0.1, 0.15} <= set(BOUNDS)  # the runbook's latency thresholds are bounds
