#!/usr/bin/env python3
"""The runbook's `python3 production_cli.py health|stats|test-card`, kept working.

A thin shim over `cardmint`: it re-runs itself with the project's virtualenv when the
interpreter that started it cannot import CardMint.
"""

import os
import sys
from pathlib import Path

COMMANDS = ("health", "stats", "test-card")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: production_cli.py {{{'|'.join(COMMANDS)}}} [--json]", file=sys.stderr)
        return 3
    try:
        from cardmint.cli.main import main as cardmint
    except ImportError:
        venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
        if venv_python.exists() and not os.environ.get("CARDMINT_SHIM_REEXEC"):
            os.environ["CARDMINT_SHIM_REEXEC"] = "1"
            os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])
        print("CardMint is not installed: run `make run` or `make test` first", file=sys.stderr)
        return 3
    return cardmint(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
