#!/usr/bin/env python3
"""The runbook's application-level load test, `python3 test_v03_production.py`, kept working.

A thin shim over `cardmint loadtest app` (same options: --duration, --concurrency, --mix,
--url, --json, ...). Exit 0 when p95 < 100 ms and errors < 0.1 %, else 2.
"""

import sys

from runbook_shim import run

if __name__ == "__main__":
    sys.exit(run(__file__, ["loadtest", "app", *sys.argv[1:]]))
