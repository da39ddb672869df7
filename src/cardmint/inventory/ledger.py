"""The append-only inventory ledger: one row per change of an item, written in the
change's transaction (a trigger refuses UPDATE and DELETE on it)."""

from __future__ import annotations

from typing import Any

from cardmint.db import Row, Transaction

INSERT_SQL = """
INSERT INTO inventory_ledger (item_id, product_id, event, from_status, to_status,
                              from_location, to_location, amount_cents, actor, reason, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id
"""
LIST_SQL = """
SELECT id, item_id, product_id, event, from_status, to_status, from_location, to_location,
       amount_cents, actor, reason, occurred_at, details
FROM inventory_ledger WHERE item_id = $1 ORDER BY occurred_at, id
"""


async def record(tx: Transaction, event: str, *, before: Row | None,
                 after: Row, actor: str, amount_cents: int | None = None,
                 reason: str | None = None, changes: dict[str, Any] | None = None) -> int:
    """One ledger row for the change from `before` (None: new item) to `after` (item
    rows); `changes` is {field: [old, new]} for what else changed."""
    details = {"changes": changes} if changes else {}
    ledger_id: int = await tx.fetchval(
        INSERT_SQL, after["id"], after["product_id"], event,
        before["status"] if before else None, after["status"],
        before["location"] if before else None, after["location"],
        amount_cents, actor, reason, details)
    return ledger_id


async def history(ex: Any, item_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await ex.fetch(LIST_SQL, item_id)]


async def record_acquired(tx: Transaction, rows: list[Any], *, actor: str,
                          reason: str | None) -> None:
    """The 'acquired' rows of many new items (a CSV import) in one statement."""
    await tx.execute(
        "INSERT INTO inventory_ledger (item_id, product_id, event, to_status, to_location,"
        " amount_cents, actor, reason)"
        " SELECT i, p, 'acquired', 'IN_STOCK', l, a, $5, $6"
        " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) AS t(i, p, l, a)",
        [r["id"] for r in rows], [r["product_id"] for r in rows],
        [r["location"] for r in rows], [r["acquisition_cost_cents"] for r in rows],
        actor, reason)
