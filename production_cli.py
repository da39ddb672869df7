#!/usr/bin/env python3
"""The runbook's `python3 production_cli.py health|stats|test-card`, kept working: a thin
shim over the same `cardmint` commands."""

import sys

from runbook_shim import run

COMMANDS = ("health", "stats", "test-card")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: production_cli.py {{{'|'.join(COMMANDS)}}} [--json]", file=sys.stderr)
        return 3
    return run(__file__, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
