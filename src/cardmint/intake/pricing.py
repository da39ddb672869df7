"""The latest market price of a printing in a condition, as the capture records it."""

from __future__ import annotations

from typing import Any

from cardmint.intake.tx import Executor

# Dollars only: the review rule's threshold is in US cents. The shop's own asking price
# is no market price. The unique key
# (variant_id, condition, source, observed_at) serves the lookup.
LATEST_SQL = """
SELECT price_cents, currency, source, observed_at FROM prices
WHERE variant_id = $1 AND condition = $2 AND currency = 'USD' AND source <> 'asking'
ORDER BY observed_at DESC, id DESC LIMIT 1
"""


async def latest(ex: Executor, variant_id: int, condition: str) -> dict[str, Any] | None:
    """{price_cents, currency, source, observed_at (ISO 8601)} or None if never priced."""
    row = await ex.fetchrow(LATEST_SQL, variant_id, condition)
    if row is None:
        return None
    return {"price_cents": row["price_cents"], "currency": row["currency"],
            "source": row["source"], "observed_at": row["observed_at"].isoformat()}
