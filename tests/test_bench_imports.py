"""The benches import cardmint lazily, inside functions, so a moved name breaks them only
when they run (``make bench`` found ``make_template`` gone from the local engine). Every
``from cardmint... import name`` in ``bench/`` must resolve."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _resolves(module: str, name: str) -> bool:
    if hasattr(importlib.import_module(module), name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True


def test_every_cardmint_import_in_the_benches_resolves() -> None:
    missing = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cardmint"):
                assert node.module is not None
                missing += [
                    f"{path.name}:{node.lineno} {node.module}.{alias.name}"
                    for alias in node.names
                    if not _resolves(node.module, alias.name)
                ]
    assert not missing, missing
