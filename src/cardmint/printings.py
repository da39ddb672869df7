"""A printing's name in full, in words a collector uses: finish, variation, edition and
other stamps, size and foil pattern. One place, so the pages, the CLI tables and the
refusals name a printing the same way ("Holo · Shadowless · 1st Edition", never
"holo/shadowless", and a jumbo card never reads as a plain "normal").

A printing is any mapping with the catalog's keys: type, subtype, size, foil, stamps."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol


class Printing(Protocol):
    """A catalog variant row or a dict with its keys (an asyncpg Record is no Mapping)."""

    def __getitem__(self, key: str, /) -> Any: ...

FINISHES = {"normal": "Normal", "holo": "Holo", "reverse": "Reverse Holo",
            "lenticular": "Lenticular", "metal": "Metal"}
EDITION_STAMPS = {"1st-edition": "1st Edition"}
SMALL_WORDS = {"e", "ex", "of", "and"}


def words(slug: str) -> str:
    """'1999-2000-copyright' -> '1999-2000 Copyright'; 'no-e-reader' -> 'No e-Reader'."""
    if slug == "no-e-reader":
        return "No e-Reader"
    if re.match(r"[0-9]", slug) and "-" in slug:  # keep a year range together
        head, _, rest = slug.rpartition("-")
        return f"{head} {rest.capitalize()}"
    return " ".join(w if w in SMALL_WORDS else w.capitalize() for w in slug.split("-"))


def parts(v: Printing) -> list[str]:
    """The printing's parts in reading order: finish, variation, edition, other stamps
    (each named as a stamp), size when not standard, foil pattern."""
    stamps: Sequence[str] = v["stamps"] or []
    out = [FINISHES.get(v["type"], words(v["type"]))]
    if v["subtype"]:
        out.append(words(v["subtype"]))
    out += [EDITION_STAMPS[s] for s in stamps if s in EDITION_STAMPS]
    out += [f"{words(s)} stamp" for s in stamps if s not in EDITION_STAMPS]
    if v["size"] and v["size"] != "standard":
        out.append(words(v["size"]))
    if v["foil"]:
        out.append(f"{words(v['foil'])} foil")
    return out


def name(v: Printing) -> str:
    """'Holo · Shadowless · 1st Edition'; 'Normal · Pikachu stamp · Jumbo'."""
    return _name(v["type"], v["subtype"], tuple(v["stamps"] or ()), v["size"], v["foil"])


@lru_cache(maxsize=4096)
def _name(type_: str, subtype: str | None, stamps: tuple[str, ...], size: str | None,
          foil: str | None) -> str:
    """Named once per distinct printing: the catalog has a few hundred, and a page of the
    inventory names one per item (a quarter of its rendering time before)."""
    return " · ".join(parts({"type": type_, "subtype": subtype, "stamps": stamps,
                             "size": size, "foil": foil}))
