"""Each item carries its set and condition; items per set, condition and status.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

At 1M items a page of a set's items (bench/scale.py: "a set in one condition") was the
listing's slowest shape: a set's items are scattered over the item ids, so PostgreSQL
either walked the primary key probing each item's product and card (me02.5 in NM, page 5:
77 ms) or gathered every item of the set's products and sorted them (15-20 ms). A count
by condition alone summed one inventory_totals row per product (140,000 rows: 20 ms).

inventory_items.set_id and .condition are copies of the item's product's (a product's set
and condition never change: they are what the product is), set by a row trigger whenever
an item is written with a product, so nothing that writes items has to know. The index
(set_id, id) gives a set's items in id order, a page is the first rows of it, and it
includes every column another filter looks at (condition, status, location, grading
company): set + any other filter is an index-only walk of the set alone. The shelf index
of 0010/0011 includes the same columns: a shelf with a condition, graded or a set is an
index-only scan too (it fetched each item from the table: 20 ms for 20,000). Graded items
(2 % in bench/scale.py's data) get the same, a partial index of their ids: "graded" with
a sparse condition was a walk of 300,000 rows of the key or a heap fetch of every graded
item (20-46 ms). And a status's ids in id order, with condition and grading company: a
walk of the key finds a status's items fast only while they are spread over the ids, and
in a shop they are not (the old items mostly sold, the ones in stock the recent ids).

inventory_set_totals holds, per set, condition and status, how many items and how many
graded, kept by the same statement triggers as 0008's and 0011's totals (product totals,
then shelves, then sets, each in key order): a total by set, condition, status or graded
in any combination sums at most a few hundred rows. The shelf totals are kept per
condition too: a shelf prefix with a condition was counted item by item (box-1 in NM:
222,000 items, 190 ms).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# The product's set and condition onto the row being written. UPDATE OF set_id, condition
# too: a statement setting them by hand gets the product's values back.
PRODUCT_FIELDS = """
CREATE FUNCTION inventory_items_product_fields() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.set_id, p.condition INTO NEW.set_id, NEW.condition
    FROM products p JOIN cards c ON c.id = p.card_id WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$
"""
PRODUCT_FIELDS_TRIGGER = """
CREATE TRIGGER inventory_items_product_fields
BEFORE INSERT OR UPDATE OF product_id, set_id, condition ON inventory_items
FOR EACH ROW EXECUTE FUNCTION inventory_items_product_fields()
"""
BACKFILL_ITEMS = """
UPDATE inventory_items i SET set_id = c.set_id, condition = p.condition
FROM products p JOIN cards c ON c.id = p.card_id WHERE p.id = i.product_id
"""

# One row's contribution, signed: to its (product, status), its (shelf, status) and its
# (set, condition, status). The same text as 0011's for the first two: a migration is a
# snapshot, it does not import another's.
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
# 0011's shelf totals, and the same per condition too.
_SHELF_DELTA = """SELECT lower(location) COLLATE "C" AS location_key,{condition} status,
       {sign}1 AS items, {sign}(grading_company IS NOT NULL)::int AS graded FROM {table}"""
_SHELF_APPLY = """
INSERT INTO inventory_shelf_totals AS t (location_key,{condition} status, items, graded)
SELECT location_key,{condition} status, sum(items), sum(graded)
FROM ({rows}) AS d GROUP BY location_key,{condition} status
HAVING sum(items) <> 0 OR sum(graded) <> 0
ORDER BY location_key,{condition} status
ON CONFLICT (location_key,{condition} status) DO UPDATE SET items = t.items + excluded.items,
    graded = t.graded + excluded.graded"""
_SET_DELTA = """SELECT set_id, condition, status, {sign}1 AS items,
       {sign}(grading_company IS NOT NULL)::int AS graded FROM {table}"""
_SET_APPLY = """
INSERT INTO inventory_set_totals AS t (set_id, condition, status, items, graded)
SELECT set_id, condition, status, sum(items), sum(graded)
FROM ({rows}) AS d GROUP BY set_id, condition, status
HAVING sum(items) <> 0 OR sum(graded) <> 0
ORDER BY set_id, condition, status
ON CONFLICT (set_id, condition, status) DO UPDATE SET items = t.items + excluded.items,
    graded = t.graded + excluded.graded"""


def _text(sql: str, *, new: bool, **kw: str) -> str:
    """A statement as this migration writes it (`new`: shelves per condition too) or as
    0011 did."""
    return sql.format(condition=" condition," if new else "", **kw)


def _function(*, new: bool) -> str:
    """inventory_totals_apply(): product and shelf totals, and when `new` the set totals
    and shelves per condition; else 0011's."""
    def rows(delta: str, tables: list[tuple[str, str]]) -> str:
        return " UNION ALL ".join(_text(delta, new=new, sign=s, table=t)
                                  for s, t in tables)

    def upserts(tables: list[tuple[str, str]]) -> str:
        parts = [(_PRODUCT_APPLY, _PRODUCT_DELTA), (_SHELF_APPLY, _SHELF_DELTA)]
        if new:
            parts.append((_SET_APPLY, _SET_DELTA))
        return ";\n        ".join(_text(apply, new=new, rows=rows(delta, tables))
                                  for apply, delta in parts)

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
            "LANGUAGE plpgsql AS $$ BEGIN DELETE FROM inventory_totals; "
            "DELETE FROM inventory_shelf_totals;{more} RETURN NULL; END $$")
BACKFILL_SETS = _SET_APPLY.format(rows=_SET_DELTA.format(sign="", table="inventory_items"))
SET_INDEX = "ix_inventory_items_set_id_id"
STATUS_INDEX = "ix_inventory_items_status_id"
SHELF_INDEX = "ix_inventory_items_location_prefix"
SHELF_INDEX_SQL = (f"CREATE INDEX {SHELF_INDEX} ON inventory_items "
                   "(lower(location) text_pattern_ops, status, id) INCLUDE ({include})")
GRADED_INDEX = "ix_inventory_items_graded_id"
# The shelf totals' key, as 0011 made it and per condition too.
SHELF_KEYS = {False: ("uq_inventory_shelf_totals_location_key_status",
                      "location_key, status"),
              True: ("uq_inventory_shelf_totals_location_key_condition_status",
                     "location_key, condition, status")}


def _shelves(*, new: bool) -> None:
    """inventory_shelf_totals keyed per condition too (`new`) or as 0011 made it, rebuilt
    from the items."""
    op.execute(f"ALTER TABLE inventory_shelf_totals DROP CONSTRAINT {SHELF_KEYS[not new][0]}")
    op.execute("DELETE FROM inventory_shelf_totals")
    if new:
        op.add_column("inventory_shelf_totals",
                      sa.Column("condition", sa.Text(), nullable=False))
    else:
        op.drop_column("inventory_shelf_totals", "condition")
    name, columns = SHELF_KEYS[new]
    op.execute(f"ALTER TABLE inventory_shelf_totals ADD CONSTRAINT {name} "
               f"UNIQUE NULLS NOT DISTINCT ({columns})")
    rows = _text(_SHELF_DELTA, new=new, sign="", table="inventory_items")
    op.execute(_text(_SHELF_APPLY, new=new, rows=rows))


def upgrade() -> None:
    op.add_column("inventory_items", sa.Column("set_id", sa.Text()))
    op.add_column("inventory_items", sa.Column("condition", sa.Text()))
    # No item changes between the backfills and the new triggers: the table is locked
    # first. The backfill changes no total: the totals trigger sits it out.
    op.execute("LOCK TABLE inventory_items IN SHARE ROW EXCLUSIVE MODE")
    op.execute("ALTER TABLE inventory_items DISABLE TRIGGER inventory_totals_update")
    op.execute(BACKFILL_ITEMS)
    op.execute("ALTER TABLE inventory_items ENABLE TRIGGER inventory_totals_update")
    op.alter_column("inventory_items", "set_id", nullable=False)
    op.alter_column("inventory_items", "condition", nullable=False)
    op.execute(PRODUCT_FIELDS)
    op.execute(PRODUCT_FIELDS_TRIGGER)
    op.create_table(
        "inventory_set_totals",
        sa.Column("set_id", sa.Text(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("items", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("graded", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("set_id", "condition", "status",
                                name="pk_inventory_set_totals"),
        comment="Items per set, condition and status, and how many graded, kept by "
                "triggers on inventory_items.",
    )
    op.execute(BACKFILL_SETS)
    _shelves(new=True)
    op.execute(_function(new=True))
    op.execute(TRUNCATE.format(more=" DELETE FROM inventory_set_totals;"))
    op.create_index(SET_INDEX, "inventory_items", ["set_id", "id"],
                    postgresql_include=["condition", "status", "location", "grading_company"])
    op.drop_index(SHELF_INDEX, table_name="inventory_items")
    op.execute(SHELF_INDEX_SQL.format(include="location, set_id, condition, grading_company"))
    op.create_index(STATUS_INDEX, "inventory_items", ["status", "id"],
                    postgresql_include=["condition", "grading_company"])
    op.create_index(GRADED_INDEX, "inventory_items", ["id"],
                    postgresql_include=["set_id", "condition", "status", "location"],
                    postgresql_where=sa.text("grading_company IS NOT NULL"))


def downgrade() -> None:
    op.drop_index(GRADED_INDEX, table_name="inventory_items")
    op.drop_index(STATUS_INDEX, table_name="inventory_items")
    op.drop_index(SHELF_INDEX, table_name="inventory_items")
    op.execute(SHELF_INDEX_SQL.format(include="location"))
    op.drop_index(SET_INDEX, table_name="inventory_items")
    op.execute(_function(new=False))
    op.execute(TRUNCATE.format(more=""))
    _shelves(new=False)
    op.drop_table("inventory_set_totals")
    op.execute("DROP TRIGGER inventory_items_product_fields ON inventory_items")
    op.execute("DROP FUNCTION inventory_items_product_fields()")
    op.drop_column("inventory_items", "condition")
    op.drop_column("inventory_items", "set_id")
