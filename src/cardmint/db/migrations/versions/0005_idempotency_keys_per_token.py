"""Idempotency keys belong to a token, not an owner's name.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Two tokens of one owner (two scripts) must not share keys, and a key must be told apart
from another token's by what presented it. Existing keys move to their owner's token
when the owner has exactly one; the others cannot be attributed and are dropped (keys
live 24 hours: at worst a retry of a request made before the upgrade writes again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("token_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE idempotency_keys k SET token_id = t.id FROM "
        "(SELECT owner, min(id) AS id FROM api_tokens GROUP BY owner HAVING count(*) = 1) t "
        "WHERE t.owner = k.owner")
    op.execute("DELETE FROM idempotency_keys WHERE token_id IS NULL")
    op.drop_constraint(op.f("pk_idempotency_keys"), "idempotency_keys", type_="primary")
    op.drop_column("idempotency_keys", "owner")
    op.alter_column("idempotency_keys", "token_id", nullable=False)
    op.create_primary_key(op.f("pk_idempotency_keys"), "idempotency_keys", ["token_id", "key"])
    op.create_foreign_key(op.f("fk_idempotency_keys_token_id_api_tokens"), "idempotency_keys",
                          "api_tokens", ["token_id"], ["id"], ondelete="CASCADE")
    op.execute("COMMENT ON TABLE idempotency_keys IS 'Responses to POSTs sent with an "
               "Idempotency-Key, replayed on a retry for 24 hours.'")


def downgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("owner", sa.Text(), nullable=True))
    op.execute("UPDATE idempotency_keys k SET owner = t.owner FROM api_tokens t "
               "WHERE t.id = k.token_id")
    op.drop_constraint(op.f("fk_idempotency_keys_token_id_api_tokens"), "idempotency_keys",
                       type_="foreignkey")
    op.drop_constraint(op.f("pk_idempotency_keys"), "idempotency_keys", type_="primary")
    # one owner's tokens may have used the same key: keep the first
    op.execute("DELETE FROM idempotency_keys a USING idempotency_keys b WHERE a.key = b.key "
               "AND a.owner = b.owner AND a.token_id > b.token_id")
    op.drop_column("idempotency_keys", "token_id")
    op.alter_column("idempotency_keys", "owner", nullable=False)
    op.create_primary_key(op.f("pk_idempotency_keys"), "idempotency_keys", ["key", "owner"])
    op.execute("COMMENT ON TABLE idempotency_keys IS 'Responses to POSTs sent with an "
               "Idempotency-Key, replayed on a retry.'")
