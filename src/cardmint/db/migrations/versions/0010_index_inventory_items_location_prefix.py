"""Index inventory_items (lower(location) text_pattern_ops, status, id): the listing's
location filter is a case-insensitive prefix ("binder" finds "Binder A p3"), which the
(location, status, id) index cannot serve.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

NAME = "ix_inventory_items_location_prefix"


def upgrade() -> None:
    op.execute(f"CREATE INDEX {NAME} ON inventory_items "
               "(lower(location) text_pattern_ops, status, id)")


def downgrade() -> None:
    op.drop_index(NAME, table_name="inventory_items")
