"""Where a card's picture is: TCGdex serves every card's scan at
`https://assets.tcgdex.net/{lang}/{serie}/{set}/{localId}/{quality}.{extension}`
(tcgdex.dev, "Assets": quality `high` or `low`, extension `png`, `webp` or `jpg`).

The series of each set comes from the vendored sets file, so naming an image needs no
query. Pages load these lazily; the operator can turn remote images off
(`CARDMINT_REMOTE_IMAGES=false`), and a page shows a placeholder when one cannot load."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from urllib.parse import quote

HOST = "assets.tcgdex.net"
ORIGIN = f"https://{HOST}"
LANGUAGE = "en"  # the catalog is TCGdex's English one
QUALITIES = ("low", "high")
SETS_FILE = Path(__file__).parent / "data" / "sets.json"


@cache
def series_of() -> dict[str, str]:
    """set id -> series id, from the vendored catalog (read once)."""
    return {s["id"]: s["series_id"] for s in json.loads(SETS_FILE.read_text())}


def image_url(set_id: str, local_id: str, quality: str = "low",
              extension: str = "webp") -> str | None:
    """The card's image on TCGdex's asset host; None for a set the catalog does not know."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}")
    series = series_of().get(set_id)
    if series is None or not local_id:
        return None
    path = "/".join(quote(part, safe="") for part in (LANGUAGE, series, set_id, local_id))
    return f"{ORIGIN}/{path}/{quality}.{extension}"
