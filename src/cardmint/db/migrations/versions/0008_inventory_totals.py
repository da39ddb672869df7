"""Items per product and status, kept up to date by triggers on inventory_items.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

The inventory listing counted every matching item for its total (700,000 rows for "in
stock" at 1M items: seconds). inventory_totals holds, per product and status, how many
items, how many graded, how many with a cost and their cost. Statement-level AFTER
triggers with transition tables apply the net change of each INSERT, UPDATE or DELETE in
the same transaction (one upsert per statement, rows skipped when nothing they count
changed, e.g. a move between shelves), so totals are read-your-writes like the items and
a bulk insert of a million rows costs one grouped upsert, not a million. A TRUNCATE of
the items empties the totals. The index (product_id, status) gains id, so a listing by
product in id order is an index-only scan. Upserts go in (product_id, status) order so two
transactions changing the same products take the rows' locks in the same order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# One row's contribution to its (product, status) total, signed.
_DELTA = """SELECT product_id, status, {sign}1 AS items,
       {sign}(grading_company IS NOT NULL)::int AS graded,
       {sign}coalesce(acquisition_cost_cents, 0) AS cost_cents,
       {sign}(acquisition_cost_cents IS NOT NULL)::int AS with_cost FROM {table}"""
_APPLY = """
INSERT INTO inventory_totals AS t (product_id, status, items, graded, cost_cents, with_cost)
SELECT product_id, status, sum(items), sum(graded), sum(cost_cents), sum(with_cost)
FROM ({rows}) AS d GROUP BY product_id, status
HAVING sum(items) <> 0 OR sum(graded) <> 0 OR sum(cost_cents) <> 0 OR sum(with_cost) <> 0
ORDER BY product_id, status
ON CONFLICT (product_id, status) DO UPDATE SET items = t.items + excluded.items,
    graded = t.graded + excluded.graded, cost_cents = t.cost_cents + excluded.cost_cents,
    with_cost = t.with_cost + excluded.with_cost"""
_NEW = _DELTA.format(sign="", table="new_rows")
_OLD = _DELTA.format(sign="-", table="old_rows")

FUNCTION = f"""
CREATE FUNCTION inventory_totals_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- PL/pgSQL plans a statement when it first runs it: only the branch of this
    -- operation refers to a transition table the trigger has.
    IF TG_OP = 'INSERT' THEN
        {_APPLY.format(rows=_NEW)};
    ELSIF TG_OP = 'DELETE' THEN
        {_APPLY.format(rows=_OLD)};
    ELSE
        {_APPLY.format(rows=_NEW + " UNION ALL " + _OLD)};
    END IF;
    RETURN NULL;
END $$
"""
TRIGGERS = (
    "CREATE TRIGGER inventory_totals_insert AFTER INSERT ON inventory_items "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION inventory_totals_apply()",
    "CREATE TRIGGER inventory_totals_update AFTER UPDATE ON inventory_items "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION inventory_totals_apply()",
    "CREATE TRIGGER inventory_totals_delete AFTER DELETE ON inventory_items "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION inventory_totals_apply()",
    "CREATE FUNCTION inventory_totals_truncate() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN DELETE FROM inventory_totals; RETURN NULL; END $$",
    "CREATE TRIGGER inventory_totals_truncate AFTER TRUNCATE ON inventory_items "
    "FOR EACH STATEMENT EXECUTE FUNCTION inventory_totals_truncate()",
)
BACKFILL = _APPLY.format(rows=_DELTA.format(sign="", table="inventory_items"))


def upgrade() -> None:
    op.create_table(
        "inventory_totals",
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("items", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("graded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("with_cost", sa.BigInteger(), server_default="0", nullable=False),
        # A product goes only once no item holds it: its totals (zeros) go with it.
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], ondelete="CASCADE",
                                name=op.f("fk_inventory_totals_product_id_products")),
        sa.PrimaryKeyConstraint("product_id", "status", name=op.f("pk_inventory_totals")),
        comment="Items per product and status (graded, with a cost, their cost), kept by "
                "triggers on inventory_items.",
    )
    op.create_index(op.f("ix_inventory_totals_status_items_graded"), "inventory_totals",
                    ["status", "items", "graded"], unique=False)
    # The listing's page by product in id order as an index-only scan; it replaces
    # (product_id, status), whose every use it serves.
    op.create_index(op.f("ix_inventory_items_product_id_status_id"), "inventory_items",
                    ["product_id", "status", "id"], unique=False)
    op.drop_index(op.f("ix_inventory_items_product_id_status"), table_name="inventory_items")
    # No item changes between the backfill and the triggers: the table is locked first.
    op.execute("LOCK TABLE inventory_items IN SHARE ROW EXCLUSIVE MODE")
    op.execute(BACKFILL)
    op.execute(FUNCTION)
    for sql in TRIGGERS:
        op.execute(sql)


def downgrade() -> None:
    op.create_index(op.f("ix_inventory_items_product_id_status"), "inventory_items",
                    ["product_id", "status"], unique=False)
    op.drop_index(op.f("ix_inventory_items_product_id_status_id"), table_name="inventory_items")
    for name in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER inventory_totals_{name} ON inventory_items")
    op.execute("DROP FUNCTION inventory_totals_truncate()")
    op.execute("DROP FUNCTION inventory_totals_apply()")
    op.drop_table("inventory_totals")
