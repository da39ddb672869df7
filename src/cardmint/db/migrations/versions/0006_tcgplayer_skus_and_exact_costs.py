"""TCGplayer SKU ids per product, and acquisition costs kept to 4 decimals.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

TCGplayer names a listing by its SKU id (one per product × condition × printing ×
language); the catalog knows only product ids. Imports learn SKU ids from the files that
carry them and the TCGplayer upload export writes them back. Collectr keeps costs with 4
decimals (352.0680): `acquisition_cost` holds them exactly, in dollars, beside the cents
that everything else reads (rounded half-even).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "tcgplayer_skus",
        sa.Column("sku_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("variant_id", sa.BigInteger(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), server_default="en", nullable=False),
        sa.Column("tcgplayer_product_id", sa.Integer(), nullable=True),
        sa.Column("learned_from", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("condition IN ('NM', 'LP', 'MP', 'HP', 'DMG')",
                           name=op.f("ck_tcgplayer_skus_condition")),
        sa.CheckConstraint("sku_id > 0", name=op.f("ck_tcgplayer_skus_sku_id_positive")),
        sa.ForeignKeyConstraint(["variant_id"], ["card_variants.id"],
                                name=op.f("fk_tcgplayer_skus_variant_id_card_variants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sku_id", name=op.f("pk_tcgplayer_skus")),
        sa.UniqueConstraint("variant_id", "condition", "language",
                            name=op.f("uq_tcgplayer_skus_variant_id_condition_language")),
        comment="TCGplayer SKU ids per printing, condition and language, learned from "
                "imported files; the TCGplayer export writes them.",
    )
    op.add_column("inventory_items", sa.Column("acquisition_cost", sa.Numeric(16, 4),
                                               nullable=True))
    op.create_check_constraint(op.f("ck_inventory_items_exact_cost_not_negative"),
                               "inventory_items", "acquisition_cost >= 0")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_inventory_items_exact_cost_not_negative"), "inventory_items",
                       type_="check")
    op.drop_column("inventory_items", "acquisition_cost")
    op.drop_table("tcgplayer_skus")
