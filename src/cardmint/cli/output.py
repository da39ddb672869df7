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


def counts(by: dict[str, int] | None) -> str:
    """{'idle': 7, 'active': 2} for people: '7 idle, 2 active' (largest first)."""
    if not by:
        return "none"
    return ", ".join(f"{n} {name}" for name, n in sorted(by.items(), key=lambda kv: -kv[1]))


def measured(value: float | None, unit: str) -> str:
    """'12.3 ms', or 'not measured' where a figure is missing (never 'None ms')."""
    if value is None:
        return "not measured"
    return f"{value:g} {unit}".rstrip() if unit != "%" else f"{value:g} %"
