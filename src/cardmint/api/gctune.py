"""Python's cyclic garbage collector, set for a server process.

With the default thresholds (700, 10, 10) a server answering thousands of requests a
second ran a full collection every few seconds, each walking every object the process
holds (FastAPI's routes and models, pydantic's schemas, the catalog cache): at 7,000
card lookups/s the p99 was 46 ms against a p50 of 2.6 ms. What start-up made lives as
long as the process, so it is frozen out of every collection (`gc.freeze`), and the
young generation is collected after 50,000 allocations instead of 700: a request's own
cycles (exceptions, futures) are still freed within a fraction of a second, and a full
collection walks only what was made since start-up (bench/README.md, issue 19).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def for_serving() -> None:
    """Call once the app is built, before serving: collect, freeze what exists, raise
    the thresholds. For this process only (tests building apps in process keep theirs)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
