"""A capture in review can be discarded (not a card, a duplicate, unreadable), with why.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

The review queue only knew how to resolve a capture into an item; a photo of something
that is no card stayed in the queue for ever. 'discarded' ends it; who and why are kept
in the capture's document (`ocr.discarded`).
"""

from __future__ import annotations

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

OLD = ("captured", "queued", "processing", "processed", "needs_review", "failed")
NEW = (*OLD, "discarded")


def _check(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_captures_status"), "captures", type_="check")
    op.create_check_constraint(op.f("ck_captures_status"), "captures", _check(NEW))


def downgrade() -> None:
    # the old schema has no word for it: a discarded capture reads as failed, with why
    op.execute("UPDATE captures SET status = 'failed', error = 'discarded in review: ' || "
               "coalesce(ocr->'discarded'->>'reason', '') WHERE status = 'discarded'")
    op.drop_constraint(op.f("ck_captures_status"), "captures", type_="check")
    op.create_check_constraint(op.f("ck_captures_status"), "captures", _check(OLD))
