"""Rendered card photos for the scan tests: faces drawn from the catalog's real data and
photographed synthetically by bench/cardphoto.py (the scan evaluation's generator), cached
per process. Tests that need them call `need_fonts()` first: without Debian's fonts
(`make fonts`) they skip with the reason."""

from __future__ import annotations

import importlib.util
import random
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cardphoto.py"
# A handful of cards: old and new layouts, a set code (2023 on), a trainer.
CARDS = ("base1-4", "sm5-43", "swsh1-84", "sv02-113", "pl3-10")


@cache
def cardphoto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cardphoto", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def need_fonts() -> None:
    missing = cardphoto().missing_fonts()
    if missing:
        pytest.skip(f"fonts for the rendered card photos are missing ({', '.join(missing)}): "
                    "`make fonts` installs Debian's fonts-dejavu-core and fonts-liberation")


@cache
def card(card_id: str) -> object:
    return next(c for c in cardphoto().cards_from_catalog() if c.id == card_id)


@cache
def photo(card_id: str, kind: str = "table", seed: int = 1) -> bytes:
    """A JPEG of the card photographed under one degradation (deterministic)."""
    cp = cardphoto()
    rng = random.Random(f"{seed}-{card_id}-{kind}")
    return cp.photograph(cp.render_face(card(card_id), rng), kind, rng)  # type: ignore[no-any-return]
