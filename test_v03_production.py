#!/usr/bin/env python3
"""The runbook's application-level load test, `python3 test_v03_production.py`, kept working.

A thin shim over `cardmint loadtest app` (same options: --duration, --concurrency, --mix,
--url, --json, ...): it re-runs itself with the project's virtualenv when the interpreter
that started it cannot import CardMint. Exit 0 when p95 < 100 ms and errors < 0.1 %, else 2.
"""

import os
import sys
from pathlib import Path


def main() -> int:
    try:
        from cardmint.cli.main import main as cardmint
    except ImportError:
        venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
        if venv_python.exists() and not os.environ.get("CARDMINT_SHIM_REEXEC"):
            os.environ["CARDMINT_SHIM_REEXEC"] = "1"
            os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])
        print("CardMint is not installed: run `make run` or `make test` first", file=sys.stderr)
        return 3
    return cardmint(["loadtest", "app", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
