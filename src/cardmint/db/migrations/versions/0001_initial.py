"""Initial schema: catalog, intake, inventory, prices and operations tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Generated from cardmint.db.schema with autogenerate, then checked and arranged by hand.
Two things autogenerate cannot see are added here by hand: the pg_trgm extension (for the
trigram indexes on card names) and the trigger that keeps inventory_ledger append-only.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# Migrations are frozen history: literals here, never imports from schema.py. Names are
# wrapped in op.f() ("final"): otherwise the naming convention of the target metadata
# would be applied to them a second time (ck_x_ck_x_...).
NOW = sa.text("now()")
FALSE = sa.text("false")
OPEN_JOB = sa.text("status IN ('queued', 'running')")

# Folds a name for accent- and case-insensitive search; cards.search_name is generated
# from it and searches apply it to the query. Every function it calls is IMMUTABLE, so it
# may be too (a stored generated column requires that). Needs a UTF8 database.
FOLD_SEARCH_SQL = r"""
CREATE FUNCTION fold_search(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN btrim(regexp_replace(
    lower(regexp_replace(normalize(value, NFKD), '[\u0300-\u036f]', '', 'g')),
    '\s+', ' ', 'g'))
"""

# One statement per op.execute: asyncpg prepares each, and a prepared statement holds one.
LEDGER_FUNCTION_SQL = """
CREATE FUNCTION inventory_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'inventory_ledger is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              TABLE = TG_TABLE_NAME,
              CONSTRAINT = 'inventory_ledger_append_only',
              HINT = 'Record a correcting entry (event ''adjusted'') instead.';
END
$$
"""
# Statement level, so even an UPDATE or DELETE that matches no row is refused.
LEDGER_TRIGGER_SQL = """
CREATE TRIGGER inventory_ledger_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON inventory_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION inventory_ledger_append_only()
"""


def _ts(name: str, *, default: bool = False, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=NOW if default else None,
                     nullable=nullable)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)


def upgrade() -> None:
    # Trusted extension: the database owner may create it, no superuser needed.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")

    # -- catalog ----------------------------------------------------------------------
    op.execute(FOLD_SEARCH_SQL)
    op.create_table(
        "sets",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("series_id", sa.Text(), nullable=False),
        sa.Column("series_name", sa.Text(), nullable=False),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("printed_total", sa.Integer(), nullable=True),
        sa.Column("card_count", sa.Integer(), nullable=False),
        sa.Column("tcg_online_code", sa.Text(), nullable=True),
        sa.Column("abbreviation", sa.Text(), nullable=True),
        sa.Column("tcgplayer_group_id", sa.Integer(), nullable=True),
        sa.Column("cardmarket_id", sa.Integer(), nullable=True),
        _ts("updated_at", default=True, nullable=False),
        sa.CheckConstraint("card_count >= 0", name=op.f("ck_sets_card_count_not_negative")),
        sa.CheckConstraint("printed_total >= 0", name=op.f("ck_sets_printed_total_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sets")),
        comment="Card sets (expansions) from the vendored TCGdex catalog.",
    )

    op.create_table(
        "cards",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("set_id", sa.Text(), nullable=False),
        sa.Column("local_id", sa.Text(), nullable=False),
        sa.Column("number_key", sa.Text(),
                  sa.Computed("lower(regexp_replace(local_id, '^0+(?=[0-9])', ''))",
                              persisted=True),
                  nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("search_name", sa.Text(), sa.Computed("fold_search(name)", persisted=True),
                  nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("rarity", sa.Text(), nullable=True),
        sa.Column("illustrator", sa.Text(), nullable=True),
        sa.Column("hp", sa.Integer(), nullable=True),
        sa.Column("types", ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.Column("evolve_from", sa.Text(), nullable=True),
        sa.Column("dex_ids", ARRAY(sa.Integer()), server_default="{}", nullable=False),
        sa.Column("regulation_mark", sa.Text(), nullable=True),
        sa.Column("trainer_type", sa.Text(), nullable=True),
        sa.Column("energy_type", sa.Text(), nullable=True),
        sa.Column("retreat", sa.Integer(), nullable=True),
        sa.Column("attacks", JSONB(), server_default="[]", nullable=False),
        sa.Column("abilities", JSONB(), server_default="[]", nullable=False),
        sa.Column("weaknesses", JSONB(), server_default="[]", nullable=False),
        sa.Column("resistances", JSONB(), server_default="[]", nullable=False),
        sa.Column("legal_standard", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("legal_expanded", sa.Boolean(), server_default=FALSE, nullable=False),
        _ts("updated_at", default=True, nullable=False),
        sa.CheckConstraint("category IN ('Pokemon', 'Trainer', 'Energy')",
                           name=op.f("ck_cards_category")),
        sa.CheckConstraint("energy_type IN ('Normal', 'Special')",
                           name=op.f("ck_cards_energy_type")),
        sa.CheckConstraint("id = set_id || '-' || local_id",
                           name=op.f("ck_cards_id_is_set_and_local_id")),
        sa.CheckConstraint("hp >= 0", name=op.f("ck_cards_hp_not_negative")),
        sa.CheckConstraint("position > 0", name=op.f("ck_cards_position_positive")),
        sa.CheckConstraint("retreat >= 0", name=op.f("ck_cards_retreat_not_negative")),
        sa.ForeignKeyConstraint(["set_id"], ["sets.id"], name=op.f("fk_cards_set_id_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        sa.UniqueConstraint("set_id", "local_id", name=op.f("uq_cards_set_id_local_id")),
        comment="Every English card of the catalog; game text as in the upstream data.",
    )
    op.create_index(op.f("ix_cards_name_trgm"), "cards", ["name"], postgresql_using="gin",
                    postgresql_ops={"name": "gin_trgm_ops"})
    op.create_index(op.f("ix_cards_search_name_trgm"), "cards", ["search_name"],
                    postgresql_using="gin", postgresql_ops={"search_name": "gin_trgm_ops"})
    op.create_index(op.f("ix_cards_number_key_set_id"), "cards", ["number_key", "set_id"])
    op.create_index(op.f("ix_cards_rarity"), "cards", ["rarity"])
    op.create_index(op.f("ix_cards_category"), "cards", ["category"])
    op.create_index(op.f("ix_cards_dex_ids"), "cards", ["dex_ids"], postgresql_using="gin")

    op.create_table(
        "card_variants",
        _id(),
        sa.Column("card_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("subtype", sa.Text(), nullable=True),
        sa.Column("size", sa.Text(), nullable=True),
        sa.Column("stamps", ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("foil", sa.Text(), nullable=True),
        sa.Column("tcgplayer_product_id", sa.Integer(), nullable=True),
        sa.Column("cardmarket_id", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        _ts("updated_at", default=True, nullable=False),
        sa.CheckConstraint("type <> ''", name=op.f("ck_card_variants_type_not_empty")),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"],
                                name=op.f("fk_card_variants_card_id_cards"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_variants")),
        sa.UniqueConstraint("card_id", "type", "subtype", "size", "stamps", "foil",
                            name=op.f("uq_card_variants_natural_key"),
                            postgresql_nulls_not_distinct=True),
        sa.UniqueConstraint("id", "card_id", name=op.f("uq_card_variants_id_card_id")),
        comment="Printings of a card (normal, reverse holo, stamped, ...) from the catalog.",
    )

    # -- intake -----------------------------------------------------------------------
    op.create_table(
        "captures",
        _id(),
        sa.Column("image_ref", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="captured", nullable=False),
        sa.Column("ocr_text", sa.Text(), nullable=True),
        sa.Column("ocr", JSONB(), nullable=True),
        sa.Column("candidates", JSONB(), server_default="[]", nullable=False),
        sa.Column("card_id", sa.Text(), nullable=True),
        sa.Column("variant_id", sa.BigInteger(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at", default=True, nullable=False),
        _ts("updated_at", default=True, nullable=False),
        sa.CheckConstraint(
            "status IN ('captured', 'queued', 'processing', 'processed', 'needs_review', "
            "'failed')",
            name=op.f("ck_captures_status")),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1",
                           name=op.f("ck_captures_confidence_range")),
        sa.CheckConstraint("variant_id IS NULL OR card_id IS NOT NULL",
                           name=op.f("ck_captures_variant_needs_card")),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_captures_card_id_cards")),
        sa.ForeignKeyConstraint(["variant_id", "card_id"],
                                ["card_variants.id", "card_variants.card_id"],
                                name=op.f("fk_captures_variant_id_card_id_card_variants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_captures")),
        comment="Scanned images going through identification.",
    )
    op.create_index(op.f("ix_captures_status_created_at"), "captures", ["status", "created_at"])
    op.create_index(op.f("ix_captures_card_id"), "captures", ["card_id"],
                    postgresql_where=sa.text("card_id IS NOT NULL"))

    op.create_table(
        "processing_jobs",
        _id(),
        sa.Column("capture_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="queued", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("payload", JSONB(), server_default="{}", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="5", nullable=False),
        _ts("run_after", default=True, nullable=False),
        _ts("locked_until"),
        sa.Column("locked_by", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("created_at", default=True, nullable=False),
        _ts("finished_at"),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')",
                           name=op.f("ck_processing_jobs_status")),
        sa.CheckConstraint("kind ~ '^[a-z][a-z0-9_]*$'",
                           name=op.f("ck_processing_jobs_kind_format")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_processing_jobs_attempts_not_negative")),
        sa.CheckConstraint("max_attempts > 0",
                           name=op.f("ck_processing_jobs_max_attempts_positive")),
        sa.CheckConstraint("attempts <= max_attempts",
                           name=op.f("ck_processing_jobs_attempts_within_max")),
        sa.CheckConstraint("status <> 'running' OR locked_until IS NOT NULL",
                           name=op.f("ck_processing_jobs_running_is_locked")),
        sa.CheckConstraint("(finished_at IS NOT NULL) = (status IN ('succeeded', 'failed'))",
                           name=op.f("ck_processing_jobs_finished_when_done")),
        sa.ForeignKeyConstraint(["capture_id"], ["captures.id"],
                                name=op.f("fk_processing_jobs_capture_id_captures"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processing_jobs")),
        comment="The intake work queue; workers take jobs with FOR UPDATE SKIP LOCKED.",
    )
    op.create_index(op.f("ix_processing_jobs_ready"), "processing_jobs",
                    ["priority", "run_after", "id"], postgresql_where=OPEN_JOB)
    op.create_index(op.f("uq_processing_jobs_open_capture_kind"), "processing_jobs",
                    ["capture_id", "kind"], unique=True, postgresql_where=OPEN_JOB)
    op.create_index(op.f("ix_processing_jobs_capture_id"), "processing_jobs", ["capture_id"])

    # -- inventory --------------------------------------------------------------------
    op.create_table(
        "products",
        _id(),
        sa.Column("card_id", sa.Text(), nullable=False),
        sa.Column("variant_id", sa.BigInteger(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), server_default="en", nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        _ts("created_at", default=True, nullable=False),
        _ts("updated_at", default=True, nullable=False),
        sa.CheckConstraint("condition IN ('NM', 'LP', 'MP', 'HP', 'DMG')",
                           name=op.f("ck_products_condition")),
        sa.CheckConstraint("language ~ '^[a-z]{2}(-[a-z]{2,4})?$'",
                           name=op.f("ck_products_language_format")),
        sa.CheckConstraint("sku <> '' AND sku !~ '\\s'", name=op.f("ck_products_sku_format")),
        sa.ForeignKeyConstraint(["variant_id", "card_id"],
                                ["card_variants.id", "card_variants.card_id"],
                                name=op.f("fk_products_variant_id_card_id_card_variants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("sku", name=op.f("uq_products_sku")),
        sa.UniqueConstraint("variant_id", "condition", "language",
                            name=op.f("uq_products_variant_id_condition_language")),
        comment="What we sell: a card variant in a condition and language, with its SKU.",
    )
    op.create_index(op.f("ix_products_card_id"), "products", ["card_id"])

    op.create_table(
        "inventory_items",
        _id(),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="IN_STOCK", nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("acquisition_cost_cents", sa.BigInteger(), nullable=True),
        sa.Column("acquired_on", sa.Date(), nullable=True),
        sa.Column("grading_company", sa.Text(), nullable=True),
        sa.Column("grade", sa.Numeric(precision=3, scale=1), nullable=True),
        sa.Column("cert_number", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        _ts("created_at", default=True, nullable=False),
        _ts("updated_at", default=True, nullable=False),
        sa.CheckConstraint("status IN ('IN_STOCK', 'RESERVED', 'SOLD', 'REMOVED')",
                           name=op.f("ck_inventory_items_status")),
        sa.CheckConstraint("acquisition_cost_cents >= 0",
                           name=op.f("ck_inventory_items_cost_not_negative")),
        sa.CheckConstraint("grade >= 1 AND grade <= 10",
                           name=op.f("ck_inventory_items_grade_range")),
        sa.CheckConstraint("(grade IS NULL) = (grading_company IS NULL)",
                           name=op.f("ck_inventory_items_grade_with_company")),
        sa.CheckConstraint("cert_number IS NULL OR grading_company IS NOT NULL",
                           name=op.f("ck_inventory_items_cert_needs_company")),
        sa.CheckConstraint("grading_company <> ''",
                           name=op.f("ck_inventory_items_grading_company_not_empty")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_inventory_items_version_positive")),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"],
                                name=op.f("fk_inventory_items_product_id_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_items")),
        sa.UniqueConstraint("grading_company", "cert_number",
                            name=op.f("uq_inventory_items_grading_company_cert_number")),
        comment="Physical cards we hold, one row per copy.",
    )
    op.create_index(op.f("ix_inventory_items_product_id_status"), "inventory_items",
                    ["product_id", "status"])

    op.create_table(
        "inventory_ledger",
        _id(),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("from_status", sa.Text(), nullable=True),
        sa.Column("to_status", sa.Text(), nullable=True),
        sa.Column("from_location", sa.Text(), nullable=True),
        sa.Column("to_location", sa.Text(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("occurred_at", default=True, nullable=False),
        sa.Column("details", JSONB(), server_default="{}", nullable=False),
        sa.CheckConstraint(
            "event IN ('acquired', 'reserved', 'released', 'sold', 'returned', 'removed', "
            "'moved', 'adjusted')",
            name=op.f("ck_inventory_ledger_event")),
        sa.CheckConstraint("from_status IN ('IN_STOCK', 'RESERVED', 'SOLD', 'REMOVED')",
                           name=op.f("ck_inventory_ledger_from_status")),
        sa.CheckConstraint("to_status IN ('IN_STOCK', 'RESERVED', 'SOLD', 'REMOVED')",
                           name=op.f("ck_inventory_ledger_to_status")),
        sa.CheckConstraint("amount_cents >= 0",
                           name=op.f("ck_inventory_ledger_amount_not_negative")),
        sa.CheckConstraint("actor <> ''", name=op.f("ck_inventory_ledger_actor_not_empty")),
        sa.ForeignKeyConstraint(["item_id"], ["inventory_items.id"],
                                name=op.f("fk_inventory_ledger_item_id_inventory_items")),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"],
                                name=op.f("fk_inventory_ledger_product_id_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_ledger")),
        comment="Append-only history of inventory changes (a trigger refuses UPDATE/DELETE).",
    )
    op.create_index(op.f("ix_inventory_ledger_item_id_occurred_at"), "inventory_ledger",
                    ["item_id", "occurred_at"])
    op.create_index(op.f("ix_inventory_ledger_product_id_occurred_at"), "inventory_ledger",
                    ["product_id", "occurred_at"])
    # Not visible to autogenerate (it compares tables, columns, indexes and constraints).
    op.execute(LEDGER_FUNCTION_SQL)
    op.execute(LEDGER_TRIGGER_SQL)

    # -- prices -----------------------------------------------------------------------
    op.create_table(
        "prices",
        _id(),
        sa.Column("card_id", sa.Text(), nullable=False),
        sa.Column("variant_id", sa.BigInteger(), nullable=False),
        sa.Column("condition", sa.Text(), server_default="NM", nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), server_default="USD", nullable=False),
        _ts("observed_at", default=True, nullable=False),
        sa.CheckConstraint("condition IN ('NM', 'LP', 'MP', 'HP', 'DMG')",
                           name=op.f("ck_prices_condition")),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_prices_price_not_negative")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_prices_currency_format")),
        sa.CheckConstraint("source <> ''", name=op.f("ck_prices_source_not_empty")),
        sa.ForeignKeyConstraint(["variant_id", "card_id"],
                                ["card_variants.id", "card_variants.card_id"],
                                name=op.f("fk_prices_variant_id_card_id_card_variants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
        sa.UniqueConstraint("variant_id", "condition", "source", "observed_at",
                            name=op.f("uq_prices_variant_id_condition_source_observed_at")),
        comment="Observed market prices per variant and condition.",
    )
    op.create_index(op.f("ix_prices_card_id_observed_at"), "prices", ["card_id", "observed_at"])

    # -- operations -------------------------------------------------------------------
    op.create_table(
        "backups",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        _ts("started_at", default=True, nullable=False),
        _ts("finished_at"),
        sa.Column("start_lsn", sa.Text(), nullable=True),
        sa.Column("end_lsn", sa.Text(), nullable=True),
        sa.Column("timeline", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("throughput_mb_s", sa.Double(), nullable=True),
        sa.Column("verified", sa.Boolean(), server_default=FALSE, nullable=False),
        _ts("verified_at"),
        sa.Column("node", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'ok', 'failed')", name=op.f("ck_backups_status")),
        sa.CheckConstraint("status = 'running' OR finished_at IS NOT NULL",
                           name=op.f("ck_backups_finished_when_done")),
        sa.CheckConstraint("finished_at >= started_at",
                           name=op.f("ck_backups_finished_after_start")),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_backups_size_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
        comment="Base backups taken by `cardmint backup create`.",
    )
    op.create_index(op.f("ix_backups_started_at"), "backups", ["started_at"])

    op.create_table(
        "drills",
        _id(),
        sa.Column("kind", sa.Text(), nullable=False),
        _ts("started_at", default=True, nullable=False),
        _ts("finished_at"),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("report", JSONB(), server_default="{}", nullable=False),
        sa.CheckConstraint("finished_at >= started_at",
                           name=op.f("ck_drills_finished_after_start")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drills")),
        comment="Failover and restore drills with their measured report.",
    )
    op.create_index(op.f("ix_drills_kind_started_at"), "drills", ["kind", "started_at"])

    op.create_table(
        "incidents",
        _id(),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        _ts("opened_at", default=True, nullable=False),
        _ts("acknowledged_at"),
        _ts("mitigated_at"),
        _ts("resolved_at"),
        _ts("deadline_at"),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.CheckConstraint("severity IN ('P0', 'P1', 'P2')", name=op.f("ck_incidents_severity")),
        sa.CheckConstraint("status IN ('open', 'mitigated', 'resolved')",
                           name=op.f("ck_incidents_status")),
        sa.CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL)",
                           name=op.f("ck_incidents_resolved_when_resolved")),
        sa.CheckConstraint("title <> ''", name=op.f("ck_incidents_title_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        comment="Incidents opened by people or by alerts, with their timeline.",
    )
    op.create_index(op.f("ix_incidents_status_opened_at"), "incidents", ["status", "opened_at"])

    op.create_table(
        "alerts",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="firing", nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("node", sa.Text(), nullable=True),
        _ts("started_at", default=True, nullable=False),
        _ts("resolved_at"),
        sa.Column("incident_id", sa.BigInteger(), nullable=True),
        sa.Column("runbook_section", sa.Text(), nullable=True),
        sa.Column("recommendation", sa.Text(), nullable=True),
        _ts("last_seen_at"),
        sa.CheckConstraint("severity IN ('P0', 'P1', 'P2')", name=op.f("ck_alerts_severity")),
        sa.CheckConstraint("status IN ('firing', 'resolved')", name=op.f("ck_alerts_status")),
        sa.CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL)",
                           name=op.f("ck_alerts_resolved_when_resolved")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_alerts_incident_id_incidents"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        comment="Threshold alerts raised by `cardmint monitor`.",
    )
    op.create_index(op.f("uq_alerts_firing_name_node"), "alerts", ["name", "node"], unique=True,
                    postgresql_where=sa.text("status = 'firing'"),
                    postgresql_nulls_not_distinct=True)
    op.create_index(op.f("ix_alerts_started_at"), "alerts", ["started_at"])
    op.create_index(op.f("ix_alerts_incident_id"), "alerts", ["incident_id"])

    op.create_table(
        "incident_events",
        _id(),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        _ts("at", default=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('opened', 'acknowledged', 'note', 'mitigated', 'resolved', 'alert')",
            name=op.f("ck_incident_events_kind")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_incident_events_incident_id_incidents"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_events")),
        comment="An incident's timeline: what happened and who did what, in order.",
    )
    op.create_index(op.f("ix_incident_events_incident_id_at"), "incident_events",
                    ["incident_id", "at"])

    op.create_table(
        "monitor_samples",
        _id(),
        _ts("taken_at", default=True, nullable=False),
        sa.Column("figures", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_samples")),
        comment="What `cardmint monitor` measured each round: sustained rules and charts read it.",
    )
    op.create_index(op.f("ix_monitor_samples_taken_at"), "monitor_samples", ["taken_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes, constraints and triggers with it. pg_trgm stays:
    # it may have been there before 0001, and other objects may use it.
    for table in (
        "monitor_samples", "incident_events", "alerts", "incidents", "drills", "backups",
        "prices", "inventory_ledger", "inventory_items", "products",
        "processing_jobs", "captures",
        "card_variants", "cards", "sets",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION inventory_ledger_append_only()")
    op.execute("DROP FUNCTION fold_search(text)")
