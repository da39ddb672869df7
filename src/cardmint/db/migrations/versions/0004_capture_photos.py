"""Captures carry an uploaded photo: its content address and the digest of the upload.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

`image_sha256` names the stored, cleaned JPEG in the image store (cardmint.scan.store);
`source_sha256` is the digest of the bytes as uploaded, indexed so that `cardmint scan DIR`
can tell which files of a folder were already sent (resuming after an interruption).
Both nullable: captures submitted with an external imageRef have neither. Adding nullable
columns without defaults and a partial index on them rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("captures", sa.Column("image_sha256", sa.Text(), nullable=True))
    op.add_column("captures", sa.Column("source_sha256", sa.Text(), nullable=True))
    op.create_check_constraint(op.f("ck_captures_image_sha256_hex"), "captures",
                               "image_sha256 ~ '^[0-9a-f]{64}$'")
    op.create_check_constraint(op.f("ck_captures_source_sha256_hex"), "captures",
                               "source_sha256 ~ '^[0-9a-f]{64}$'")
    op.create_index(op.f("ix_captures_source_sha256"), "captures", ["source_sha256"],
                    unique=False, postgresql_where=sa.text("source_sha256 IS NOT NULL"))


def downgrade() -> None:
    op.drop_index(op.f("ix_captures_source_sha256"), table_name="captures",
                  postgresql_where=sa.text("source_sha256 IS NOT NULL"))
    op.drop_constraint(op.f("ck_captures_source_sha256_hex"), "captures", type_="check")
    op.drop_constraint(op.f("ck_captures_image_sha256_hex"), "captures", type_="check")
    op.drop_column("captures", "source_sha256")
    op.drop_column("captures", "image_sha256")
