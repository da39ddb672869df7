"""Items per shelf (lower(location)) and status, kept by the same triggers as 0008's totals.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

At 1M items the listing's total was still the costly part of a page whenever no product
filter was given: "in stock" summed one inventory_totals row per product (46,716 rows,
3-8 ms), no filter every row (~20 ms), and a shelf counted its items one by one (a prefix
such as "box-7" matches 16,000 of them: 6-25 ms). inventory_shelf_totals holds, per
lowercased location (NULL: no location) and status, how many items and how many graded:
a status alone sums one row per shelf, a shelf prefix an index range of a few rows.
The location key is in the "C" collation, so its plain btree index serves LIKE 'prefix%'.
inventory_totals_apply() now applies each statement's net change to both tables (product
totals first, then shelves, each in key order: every writer takes row locks in the same
order). A move between shelves now writes two shelf rows.

The shelf index of 0010 gains INCLUDE (location): a shelf's page of ids is then an
index-only scan (PostgreSQL computes lower(location) from the included column), which the
planner costs below a walk of the primary key; without it, it misjudged a shelf's share
of the items and walked 124,000 rows of the key for a page of 50 (31 ms instead of 1).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# One row's contribution, signed: to its (product, status) and to its (shelf, status).
_PRODUCT_DELTA = """SELECT product_id, status, {sign}1 AS items,
       {sign}(grading_company IS NOT NULL)::int AS graded,
       {sign}coalesce(acquisition_cost_cents, 0) AS cost_cents,
       {sign}(acquisition_cost_cents IS NOT NULL)::int AS with_cost FROM {table}"""
_PRODUCT_APPLY = """
INSERT INTO inventory_totals AS t (product_id, status, items, graded, cost_cents, with_cost)
SELECT product_id, status, sum(items), sum(graded), sum(cost_cents), sum(with_cost)
FROM ({rows}) AS d GROUP BY product_id, status
HAVING sum(items) <> 0 OR sum(graded) <> 0 OR sum(cost_cents) <> 0 OR sum(with_cost) <> 0
ORDER BY product_id, status
ON CONFLICT (product_id, status) DO UPDATE SET items = t.items + excluded.items,
    graded = t.graded + excluded.graded, cost_cents = t.cost_cents + excluded.cost_cents,
    with_cost = t.with_cost + excluded.with_cost"""
_SHELF_DELTA = """SELECT lower(location) COLLATE "C" AS location_key, status,
       {sign}1 AS items, {sign}(grading_company IS NOT NULL)::int AS graded FROM {table}"""
_SHELF_APPLY = """
INSERT INTO inventory_shelf_totals AS t (location_key, status, items, graded)
SELECT location_key, status, sum(items), sum(graded)
FROM ({rows}) AS d GROUP BY location_key, status
HAVING sum(items) <> 0 OR sum(graded) <> 0
ORDER BY location_key, status
ON CONFLICT (location_key, status) DO UPDATE SET items = t.items + excluded.items,
    graded = t.graded + excluded.graded"""


def _function(*, shelves: bool) -> str:
    """inventory_totals_apply(): 0008's product totals, and with `shelves` the shelf totals."""
    def rows(delta: str, tables: list[tuple[str, str]]) -> str:
        return " UNION ALL ".join(delta.format(sign=s, table=t) for s, t in tables)

    def upserts(tables: list[tuple[str, str]]) -> str:
        out = _PRODUCT_APPLY.format(rows=rows(_PRODUCT_DELTA, tables))
        if shelves:
            out += ";\n        " + _SHELF_APPLY.format(rows=rows(_SHELF_DELTA, tables))
        return out

    return f"""
CREATE OR REPLACE FUNCTION inventory_totals_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- PL/pgSQL plans a statement when it first runs it: only the branch of this
    -- operation refers to a transition table the trigger has.
    IF TG_OP = 'INSERT' THEN
        {upserts([("", "new_rows")])};
    ELSIF TG_OP = 'DELETE' THEN
        {upserts([("-", "old_rows")])};
    ELSE
        {upserts([("", "new_rows"), ("-", "old_rows")])};
    END IF;
    RETURN NULL;
END $$
"""


TRUNCATE = ("CREATE OR REPLACE FUNCTION inventory_totals_truncate() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN DELETE FROM inventory_totals;{more} RETURN NULL; "
            "END $$")
BACKFILL = _SHELF_APPLY.format(rows=_SHELF_DELTA.format(sign="", table="inventory_items"))


SHELF_INDEX = "ix_inventory_items_location_prefix"
SHELF_INDEX_SQL = (f"CREATE INDEX {SHELF_INDEX} ON inventory_items "
                   "(lower(location) text_pattern_ops, status, id){include}")


def upgrade() -> None:
    op.create_table(
        "inventory_shelf_totals",
        sa.Column("location_key", sa.Text(collation="C"), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("items", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("graded", sa.BigInteger(), server_default="0", nullable=False),
        comment="Items per lowercased location (NULL: none) and status, and how many "
                "graded, kept by triggers on inventory_items.",
    )
    # NULLS NOT DISTINCT: the items without a location are one row per status too.
    op.execute("ALTER TABLE inventory_shelf_totals ADD CONSTRAINT "
               "uq_inventory_shelf_totals_location_key_status UNIQUE NULLS NOT DISTINCT "
               "(location_key, status)")
    # No item changes between the backfill and the new function: the table is locked first.
    op.execute("LOCK TABLE inventory_items IN SHARE ROW EXCLUSIVE MODE")
    op.execute(BACKFILL)
    op.execute(_function(shelves=True))
    op.execute(TRUNCATE.format(more=" DELETE FROM inventory_shelf_totals;"))
    op.drop_index(SHELF_INDEX, table_name="inventory_items")
    op.execute(SHELF_INDEX_SQL.format(include=" INCLUDE (location)"))


def downgrade() -> None:
    op.drop_index(SHELF_INDEX, table_name="inventory_items")
    op.execute(SHELF_INDEX_SQL.format(include=""))
    op.execute(_function(shelves=False))
    op.execute(TRUNCATE.format(more=""))
    op.drop_table("inventory_shelf_totals")
