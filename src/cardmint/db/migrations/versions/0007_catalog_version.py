"""The catalog's version: one row a catalog load bumps, for the servers' catalog caches.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06

Catalog answers are cached in each server process (catalog/cache.py); a load that changes
the catalog bumps this row in its own transaction and sends NOTIFY catalog_version, so a
cached answer is used only while its version is the current one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_version",
        sa.Column("id", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("id", name=op.f("ck_catalog_version_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_version")),
        comment="The catalog's version: bumped by each load that changed the catalog.",
    )
    op.execute("INSERT INTO catalog_version (id) VALUES (true)")


def downgrade() -> None:
    op.drop_table("catalog_version")
