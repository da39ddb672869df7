"""How commands report: one JSON document with --json, a rich table or line otherwise,
and the design's exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

OK, WARN, CRITICAL, UNAVAILABLE = 0, 1, 2, 3

console = Console()
errors = Console(stderr=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, indent=2)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print `data` as JSON on stdout, or let `render` draw it for people."""
    if as_json:
        sys.stdout.write(to_json(data) + "\n")
    else:
        render(data)
