"""The database schema, declared with SQLAlchemy Core for alembic autogenerate only.

Nothing queries through these objects at run time (queries are plain SQL via asyncpg).
Conventions: money is integer cents (bigint), time is timestamptz, catalog rows keep the
catalog's text ids, every other table has a bigint identity id. Constraint names follow
`NAMING_CONVENTION` so the API can tell a client which rule a request broke
(e.g. `ck_inventory_items_cost_not_negative`, `uq_products_sku`).

What autogenerate cannot see lives only in the migrations: the pg_trgm extension, the
fold_search() function behind cards.search_name, and the append-only trigger on
inventory_ledger (see versions/0001_initial.py).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from cardmint.db.values import (
    CAPTURE_STATUSES,
    CARD_CATEGORIES,
    CONDITIONS,
    ITEM_STATUSES,
    JOB_STATUSES,
    LEDGER_EVENTS,
    SEVERITIES,
    TOKEN_SCOPES,
)

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


# fold_search(text) is an IMMUTABLE SQL function created by migration 0001 (autogenerate
# does not see functions): NFKD, combining accents removed, lower case, spaces collapsed.
NUMBER_KEY_SQL = "lower(regexp_replace(local_id, '^0+(?=[0-9])', ''))"


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL text for `column IN (...)`, used by CHECK constraints."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                     server_default=sa.func.now())


def _updated_at() -> sa.Column[datetime]:
    return sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                     server_default=sa.func.now())


def _id() -> sa.Column[int]:
    # BY DEFAULT (not ALWAYS) so restores and imports may keep their ids.
    return sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True)


# -- catalog ------------------------------------------------------------------------------

sets = sa.Table(
    "sets", metadata,
    sa.Column("id", sa.Text, primary_key=True),  # TCGdex set id, e.g. base1, sv10
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("series_id", sa.Text, nullable=False),
    sa.Column("series_name", sa.Text, nullable=False),
    sa.Column("release_date", sa.Date),
    sa.Column("printed_total", sa.Integer),  # the number printed on the cards ("/102")
    sa.Column("card_count", sa.Integer, nullable=False),  # cards of this set in the catalog
    sa.Column("tcg_online_code", sa.Text),
    sa.Column("abbreviation", sa.Text),
    sa.Column("tcgplayer_group_id", sa.Integer),
    sa.Column("cardmarket_id", sa.Integer),
    _updated_at(),
    sa.CheckConstraint("printed_total >= 0", name="printed_total_not_negative"),
    sa.CheckConstraint("card_count >= 0", name="card_count_not_negative"),
    comment="Card sets (expansions) from the vendored TCGdex catalog.",
)

cards = sa.Table(
    "cards", metadata,
    sa.Column("id", sa.Text, primary_key=True),  # "<set id>-<local_id>"
    sa.Column("set_id", sa.Text, sa.ForeignKey("sets.id"), nullable=False),
    sa.Column("local_id", sa.Text, nullable=False),  # as printed/upstream: 001, TG01, 77a
    # local_id lower-cased without leading zeros ("004" -> "4"), so "4/102" finds it.
    sa.Column("number_key", sa.Text, sa.Computed(NUMBER_KEY_SQL, persisted=True),
              nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # 1-based, natural order in the set
    sa.Column("name", sa.Text, nullable=False),
    # fold_search(name): no accents, lower case ("Pokémon" -> "pokemon"). Searches fold
    # the query with the same SQL function: WHERE search_name % fold_search($1).
    sa.Column("search_name", sa.Text, sa.Computed("fold_search(name)", persisted=True),
              nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("rarity", sa.Text),
    sa.Column("illustrator", sa.Text),
    sa.Column("hp", sa.Integer),
    sa.Column("types", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("stage", sa.Text),
    sa.Column("evolve_from", sa.Text),
    sa.Column("dex_ids", ARRAY(sa.Integer), nullable=False, server_default="{}"),
    sa.Column("regulation_mark", sa.Text),
    sa.Column("trainer_type", sa.Text),
    sa.Column("energy_type", sa.Text),
    sa.Column("retreat", sa.Integer),
    sa.Column("attacks", JSONB, nullable=False, server_default="[]"),
    sa.Column("abilities", JSONB, nullable=False, server_default="[]"),
    sa.Column("weaknesses", JSONB, nullable=False, server_default="[]"),
    sa.Column("resistances", JSONB, nullable=False, server_default="[]"),
    sa.Column("legal_standard", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("legal_expanded", sa.Boolean, nullable=False, server_default=sa.false()),
    _updated_at(),
    sa.UniqueConstraint("set_id", "local_id"),  # also serves lookups by set_id alone
    sa.CheckConstraint("id = set_id || '-' || local_id", name="id_is_set_and_local_id"),
    sa.CheckConstraint(_in("category", CARD_CATEGORIES), name="category"),
    sa.CheckConstraint("energy_type IN ('Normal', 'Special')", name="energy_type"),
    sa.CheckConstraint("hp >= 0", name="hp_not_negative"),
    sa.CheckConstraint("retreat >= 0", name="retreat_not_negative"),
    sa.CheckConstraint("position > 0", name="position_positive"),
    comment="Every English card of the catalog; game text as in the upstream data.",
)
sa.Index("ix_cards_name_trgm", cards.c.name, postgresql_using="gin",
         postgresql_ops={"name": "gin_trgm_ops"})
sa.Index("ix_cards_search_name_trgm", cards.c.search_name, postgresql_using="gin",
         postgresql_ops={"search_name": "gin_trgm_ops"})
sa.Index(None, cards.c.number_key, cards.c.set_id)
sa.Index(None, cards.c.rarity)
sa.Index(None, cards.c.category)
sa.Index(None, cards.c.dex_ids, postgresql_using="gin")

card_variants = sa.Table(
    "card_variants", metadata,
    _id(),
    # Variants are part of their card: they go with it (products then block the delete).
    sa.Column("card_id", sa.Text, sa.ForeignKey("cards.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("type", sa.Text, nullable=False),  # normal, reverse, holo, ...
    sa.Column("subtype", sa.Text),  # shadowless, unlimited, ...
    sa.Column("size", sa.Text),  # jumbo, standard
    sa.Column("stamps", ARRAY(sa.Text), nullable=False, server_default="{}"),  # sorted
    sa.Column("foil", sa.Text),
    sa.Column("tcgplayer_product_id", sa.Integer),
    sa.Column("cardmarket_id", sa.Integer),
    sa.Column("position", sa.Integer, nullable=False),  # order in the card's variant list
    _updated_at(),
    # The natural key: reloads upsert on it, so ids (which products reference) stay stable.
    sa.UniqueConstraint("card_id", "type", "subtype", "size", "stamps", "foil",
                        name="uq_card_variants_natural_key",
                        postgresql_nulls_not_distinct=True),
    # Target of the (variant_id, card_id) foreign keys that keep card_id consistent.
    sa.UniqueConstraint("id", "card_id"),
    sa.CheckConstraint("type <> ''", name="type_not_empty"),
    comment="Printings of a card (normal, reverse holo, stamped, ...) from the catalog.",
)

# -- intake -------------------------------------------------------------------------------

# One row: bumped by every catalog load that changed something (and NOTIFY catalog_version
# with the new number), so the servers' in-process catalog caches know when to drop answers.
catalog_version = sa.Table(
    "catalog_version", metadata,
    sa.Column("id", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.CheckConstraint("id", name="one_row"),
    comment="The catalog's version: bumped by each load that changed the catalog.",
)

captures = sa.Table(
    "captures", metadata,
    _id(),
    sa.Column("image_ref", sa.Text, nullable=False),  # where the scan is stored
    sa.Column("status", sa.Text, nullable=False, server_default="captured"),
    sa.Column("ocr_text", sa.Text),
    sa.Column("ocr", JSONB),  # raw OCR output (boxes, per-field text)
    sa.Column("candidates", JSONB, nullable=False, server_default="[]"),  # ranked guesses
    sa.Column("card_id", sa.Text),
    sa.Column("variant_id", sa.BigInteger),
    sa.Column("confidence", sa.Double),
    sa.Column("error", sa.Text),
    _created_at(),
    _updated_at(),
    # An uploaded photo: its address in the image store (the stored, cleaned JPEG) and the
    # digest of the bytes as uploaded (`cardmint scan DIR` skips files already sent).
    sa.Column("image_sha256", sa.Text),
    sa.Column("source_sha256", sa.Text),
    sa.ForeignKeyConstraint(["card_id"], ["cards.id"]),
    sa.ForeignKeyConstraint(["variant_id", "card_id"],
                            ["card_variants.id", "card_variants.card_id"]),
    sa.CheckConstraint(_in("status", CAPTURE_STATUSES), name="status"),
    sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
    sa.CheckConstraint("variant_id IS NULL OR card_id IS NOT NULL", name="variant_needs_card"),
    sa.CheckConstraint("image_sha256 ~ '^[0-9a-f]{64}$'", name="image_sha256_hex"),
    sa.CheckConstraint("source_sha256 ~ '^[0-9a-f]{64}$'", name="source_sha256_hex"),
    comment="Scanned images going through identification.",
)
sa.Index(None, captures.c.status, captures.c.created_at)
sa.Index(None, captures.c.source_sha256, postgresql_where=captures.c.source_sha256.isnot(None))
sa.Index(None, captures.c.card_id, postgresql_where=captures.c.card_id.isnot(None))

processing_jobs = sa.Table(
    "processing_jobs", metadata,
    _id(),
    sa.Column("capture_id", sa.BigInteger, sa.ForeignKey("captures.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # e.g. ocr, identify
    sa.Column("status", sa.Text, nullable=False, server_default="queued"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="100"),  # lower runs first
    sa.Column("payload", JSONB, nullable=False, server_default="{}"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
    sa.Column("run_after", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    # A worker's lease: past locked_until another worker may take the job over.
    sa.Column("locked_until", sa.DateTime(timezone=True)),
    sa.Column("locked_by", sa.Text),
    sa.Column("last_error", sa.Text),
    _created_at(),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(_in("status", JOB_STATUSES), name="status"),
    sa.CheckConstraint("kind ~ '^[a-z][a-z0-9_]*$'", name="kind_format"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    sa.CheckConstraint("max_attempts > 0", name="max_attempts_positive"),
    sa.CheckConstraint("attempts <= max_attempts", name="attempts_within_max"),
    sa.CheckConstraint("status <> 'running' OR locked_until IS NOT NULL",
                       name="running_is_locked"),
    sa.CheckConstraint("(finished_at IS NOT NULL) = (status IN ('succeeded', 'failed'))",
                       name="finished_when_done"),
    comment="The intake work queue; workers take jobs with FOR UPDATE SKIP LOCKED.",
)
# Only open jobs are indexed, so the dequeue scan stays small however long the history.
sa.Index("ix_processing_jobs_ready", processing_jobs.c.priority, processing_jobs.c.run_after,
         processing_jobs.c.id,
         postgresql_where=processing_jobs.c.status.in_(("queued", "running")))
# At most one open job of a kind per capture: enqueueing twice is a no-op (ON CONFLICT).
sa.Index("uq_processing_jobs_open_capture_kind", processing_jobs.c.capture_id,
         processing_jobs.c.kind, unique=True,
         postgresql_where=processing_jobs.c.status.in_(("queued", "running")))
sa.Index(None, processing_jobs.c.capture_id)

# -- inventory ----------------------------------------------------------------------------

products = sa.Table(
    "products", metadata,
    _id(),
    sa.Column("card_id", sa.Text, nullable=False),
    sa.Column("variant_id", sa.BigInteger, nullable=False),
    sa.Column("condition", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False, server_default="en"),
    sa.Column("sku", sa.Text, nullable=False),
    _created_at(),
    _updated_at(),
    # One key for both: the variant exists and belongs to card_id.
    sa.ForeignKeyConstraint(["variant_id", "card_id"],
                            ["card_variants.id", "card_variants.card_id"]),
    sa.UniqueConstraint("sku"),
    sa.UniqueConstraint("variant_id", "condition", "language"),
    sa.CheckConstraint(_in("condition", CONDITIONS), name="condition"),
    sa.CheckConstraint("language ~ '^[a-z]{2}(-[a-z]{2,4})?$'", name="language_format"),
    sa.CheckConstraint("sku <> '' AND sku !~ '\\s'", name="sku_format"),
    comment="What we sell: a card variant in a condition and language, with its SKU.",
)
sa.Index(None, products.c.card_id)

inventory_items = sa.Table(
    "inventory_items", metadata,
    _id(),
    sa.Column("product_id", sa.BigInteger, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="IN_STOCK"),
    sa.Column("location", sa.Text),
    sa.Column("acquisition_cost_cents", sa.BigInteger),  # null: unknown
    sa.Column("acquired_on", sa.Date),
    sa.Column("grading_company", sa.Text),
    sa.Column("grade", sa.Numeric(3, 1)),
    sa.Column("cert_number", sa.Text),
    # Optimistic concurrency: updates say WHERE version = $seen and bump it.
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    _created_at(),
    _updated_at(),
    sa.UniqueConstraint("grading_company", "cert_number"),
    sa.CheckConstraint(_in("status", ITEM_STATUSES), name="status"),
    sa.CheckConstraint("acquisition_cost_cents >= 0", name="cost_not_negative"),
    sa.CheckConstraint("grade >= 1 AND grade <= 10", name="grade_range"),
    sa.CheckConstraint("(grade IS NULL) = (grading_company IS NULL)",
                       name="grade_with_company"),
    sa.CheckConstraint("cert_number IS NULL OR grading_company IS NOT NULL",
                       name="cert_needs_company"),
    sa.CheckConstraint("grading_company <> ''", name="grading_company_not_empty"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    # The cost exactly as imported (Collectr keeps 4 decimals), in dollars; the cents
    # column above holds it rounded for everything else.
    sa.Column("acquisition_cost", sa.Numeric(16, 4)),
    sa.CheckConstraint("acquisition_cost >= 0", name="exact_cost_not_negative"),
    # Copies of the product's set and condition, set by a row trigger from product_id
    # (migration 0012): the listing filters and pages a set without joining.
    sa.Column("set_id", sa.Text, nullable=False),
    sa.Column("condition", sa.Text, nullable=False),
    comment="Physical cards we hold, one row per copy.",
)
# With id: the listing's page by product (a set, a card, a condition) in id order is an
# index-only scan, not a heap fetch per matching item (migration 0008).
sa.Index(None, inventory_items.c.product_id, inventory_items.c.status, inventory_items.c.id)
# The listing's shelf filter (location, optionally status) in id order: at 1M items it was a
# walk of the whole primary key (bench/scale.py).
sa.Index(None, inventory_items.c.location, inventory_items.c.status, inventory_items.c.id)
# The same filter as people type it, a case-insensitive prefix (migration 0010); with the
# location and the other filters' columns included, a shelf's ids under any other filter
# are an index-only scan (migrations 0011, 0012).
sa.Index("ix_inventory_items_location_prefix",
         sa.func.lower(inventory_items.c.location).label("location_lower"),
         inventory_items.c.status, inventory_items.c.id,
         postgresql_ops={"location_lower": "text_pattern_ops"},
         postgresql_include=["location", "set_id", "condition", "grading_company"])
# A set's items in id order, with every column another filter looks at: a page of a set
# under any other filter is an index-only walk of the set alone (migration 0012).
sa.Index(None, inventory_items.c.set_id, inventory_items.c.id,
         postgresql_include=["condition", "status", "location", "grading_company"])
# A status's items in id order (migration 0012): in a shop they are not spread over the
# ids (old items mostly sold), so walking the key for them could pass most of the table.
sa.Index(None, inventory_items.c.status, inventory_items.c.id,
         postgresql_include=["condition", "grading_company"])
# The graded items' ids, the same way: "graded" with any other filter walks these alone.
sa.Index("ix_inventory_items_graded_id", inventory_items.c.id,
         postgresql_include=["set_id", "condition", "status", "location"],
         postgresql_where=inventory_items.c.grading_company.isnot(None))

# Items per product and status, kept by statement triggers on inventory_items in the same
# transaction as the change (migration 0008): the listing's total and the value's counts
# read these rows instead of every matching item (1M items: seconds -> milliseconds).
inventory_totals = sa.Table(
    "inventory_totals", metadata,
    # a product goes only once no item holds it: its totals (zeros) go with it
    sa.Column("product_id", sa.BigInteger, sa.ForeignKey("products.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("graded", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cost_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("with_cost", sa.BigInteger, nullable=False, server_default="0"),
    # No CHECK (counts >= 0): an upsert's proposed row carries a negative delta, and
    # PostgreSQL checks it before it finds the conflict it would update.
    comment="Items per product and status (graded, with a cost, their cost), kept by "
            "triggers on inventory_items.",
)
# A total by status alone (no product filter) reads this index, not every totals row.
sa.Index(None, inventory_totals.c.status, inventory_totals.c["items"],
         inventory_totals.c.graded)

# Items per shelf (lowercased location; NULL: none), condition and status (migrations 0011,
# 0012): a total by status alone or by a shelf prefix sums a few of these rows, not every
# product's or item.
inventory_shelf_totals = sa.Table(
    "inventory_shelf_totals", metadata,
    # the "C" collation: the unique index's btree serves LIKE 'prefix%'
    sa.Column("location_key", sa.Text(collation="C"), nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("graded", sa.BigInteger, nullable=False, server_default="0"),
    # per condition too (migration 0012): a shelf with a condition is counted from here
    sa.Column("condition", sa.Text, nullable=False),
    sa.UniqueConstraint("location_key", "condition", "status",
                        postgresql_nulls_not_distinct=True),
    comment="Items per lowercased location (NULL: none) and status, and how many graded, "
            "kept by triggers on inventory_items.",
)

# Items per set, condition and status (migration 0012): a total by any of them, or
# graded, sums a few of these rows, not one per product or item.
inventory_set_totals = sa.Table(
    "inventory_set_totals", metadata,
    sa.Column("set_id", sa.Text, primary_key=True),
    sa.Column("condition", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("graded", sa.BigInteger, nullable=False, server_default="0"),
    comment="Items per set, condition and status, and how many graded, kept by "
            "triggers on inventory_items.",
)

inventory_ledger = sa.Table(
    "inventory_ledger", metadata,
    _id(),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("inventory_items.id"), nullable=False),
    sa.Column("product_id", sa.BigInteger, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("from_status", sa.Text),
    sa.Column("to_status", sa.Text),
    sa.Column("from_location", sa.Text),
    sa.Column("to_location", sa.Text),
    sa.Column("amount_cents", sa.BigInteger),  # cost on acquired, price on sold, ...
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("details", JSONB, nullable=False, server_default="{}"),
    sa.CheckConstraint(_in("event", LEDGER_EVENTS), name="event"),
    sa.CheckConstraint(_in("from_status", ITEM_STATUSES), name="from_status"),
    sa.CheckConstraint(_in("to_status", ITEM_STATUSES), name="to_status"),
    sa.CheckConstraint("amount_cents >= 0", name="amount_not_negative"),
    sa.CheckConstraint("actor <> ''", name="actor_not_empty"),
    comment="Append-only history of inventory changes (a trigger refuses UPDATE/DELETE).",
)
sa.Index(None, inventory_ledger.c.item_id, inventory_ledger.c.occurred_at)
sa.Index(None, inventory_ledger.c.product_id, inventory_ledger.c.occurred_at)

tcgplayer_skus = sa.Table(
    "tcgplayer_skus", metadata,
    sa.Column("sku_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("variant_id", sa.BigInteger,
              sa.ForeignKey("card_variants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("condition", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False, server_default="en"),
    sa.Column("tcgplayer_product_id", sa.Integer),
    sa.Column("learned_from", sa.Text, nullable=False),  # the file layout it came in
    _updated_at(),
    sa.UniqueConstraint("variant_id", "condition", "language"),
    sa.CheckConstraint(_in("condition", CONDITIONS), name="condition"),
    sa.CheckConstraint("sku_id > 0", name="sku_id_positive"),
    comment="TCGplayer SKU ids per printing, condition and language, learned from "
            "imported files; the TCGplayer export writes them.",
)

# -- prices -------------------------------------------------------------------------------

prices = sa.Table(
    "prices", metadata,
    _id(),
    sa.Column("card_id", sa.Text, nullable=False),
    sa.Column("variant_id", sa.BigInteger, nullable=False),
    sa.Column("condition", sa.Text, nullable=False, server_default="NM"),
    sa.Column("source", sa.Text, nullable=False),  # tcgplayer, cardmarket, manual, ...
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.CHAR(3), nullable=False, server_default="USD"),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.ForeignKeyConstraint(["variant_id", "card_id"],
                            ["card_variants.id", "card_variants.card_id"]),
    # Column order serves "latest price of a variant" too: scan backwards on observed_at.
    sa.UniqueConstraint("variant_id", "condition", "source", "observed_at"),
    sa.CheckConstraint(_in("condition", CONDITIONS), name="condition"),
    sa.CheckConstraint("price_cents >= 0", name="price_not_negative"),
    sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_format"),
    sa.CheckConstraint("source <> ''", name="source_not_empty"),
    comment="Observed market prices per variant and condition.",
)
sa.Index(None, prices.c.card_id, prices.c.observed_at)

# -- operations ---------------------------------------------------------------------------

backups = sa.Table(
    "backups", metadata,
    sa.Column("id", sa.Text, primary_key=True),  # e.g. 20250101T020000Z
    sa.Column("status", sa.Text, nullable=False, server_default="running"),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("start_lsn", sa.Text),  # pg_lsn as text (e.g. 0/3000028)
    sa.Column("end_lsn", sa.Text),
    sa.Column("timeline", sa.Integer),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("duration_s", sa.Double),
    sa.Column("throughput_mb_s", sa.Double),
    sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("verified_at", sa.DateTime(timezone=True)),
    sa.Column("node", sa.Text),
    sa.Column("path", sa.Text),
    sa.Column("error", sa.Text),
    sa.CheckConstraint("status IN ('running', 'ok', 'failed')", name="status"),
    sa.CheckConstraint("status = 'running' OR finished_at IS NOT NULL",
                       name="finished_when_done"),
    sa.CheckConstraint("finished_at >= started_at", name="finished_after_start"),
    sa.CheckConstraint("size_bytes >= 0", name="size_not_negative"),
    comment="Base backups taken by `cardmint backup create`.",
)
sa.Index(None, backups.c.started_at)

drills = sa.Table(
    "drills", metadata,
    _id(),
    sa.Column("kind", sa.Text, nullable=False),  # failover, restore, ...
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("ok", sa.Boolean),  # null while running
    sa.Column("report", JSONB, nullable=False, server_default="{}"),
    sa.CheckConstraint("finished_at >= started_at", name="finished_after_start"),
    comment="Failover and restore drills with their measured report.",
)
sa.Index(None, drills.c.kind, drills.c.started_at)

incidents = sa.Table(
    "incidents", metadata,
    _id(),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="open"),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
    sa.Column("mitigated_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("deadline_at", sa.DateTime(timezone=True)),  # response due, by severity
    sa.Column("notes", sa.Text),
    sa.CheckConstraint(_in("severity", SEVERITIES), name="severity"),
    sa.CheckConstraint("status IN ('open', 'mitigated', 'resolved')", name="status"),
    sa.CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL)",
                       name="resolved_when_resolved"),
    sa.CheckConstraint("title <> ''", name="title_not_empty"),
    comment="Incidents opened by people or by alerts, with their timeline.",
)
sa.Index(None, incidents.c.status, incidents.c.opened_at)

alerts = sa.Table(
    "alerts", metadata,
    _id(),
    sa.Column("name", sa.Text, nullable=False),  # the check that fired, e.g. replica_lag
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="firing"),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("value", sa.Double),
    sa.Column("threshold", sa.Double),
    sa.Column("node", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("incident_id", sa.BigInteger,
              sa.ForeignKey("incidents.id", ondelete="SET NULL")),
    sa.Column("runbook_section", sa.Text),  # where the on-call person should look
    sa.Column("recommendation", sa.Text),  # e.g. "add PgBouncer"
    sa.Column("last_seen_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(_in("severity", SEVERITIES), name="severity"),
    sa.CheckConstraint("status IN ('firing', 'resolved')", name="status"),
    sa.CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL)",
                       name="resolved_when_resolved"),
    comment="Threshold alerts raised by `cardmint monitor`.",
)
# One firing alert per check and node: a monitor that sees it again updates that row.
sa.Index("uq_alerts_firing_name_node", alerts.c.name, alerts.c.node, unique=True,
         postgresql_where=alerts.c.status == "firing", postgresql_nulls_not_distinct=True)
sa.Index(None, alerts.c.started_at)
sa.Index(None, alerts.c.incident_id)

incident_events = sa.Table(
    "incident_events", metadata,
    _id(),
    sa.Column("incident_id", sa.BigInteger,
              sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("actor", sa.Text),
    sa.CheckConstraint(
        "kind IN ('opened', 'acknowledged', 'note', 'mitigated', 'resolved', 'alert')",
        name="kind"),
    comment="An incident's timeline: what happened and who did what, in order.",
)
sa.Index(None, incident_events.c.incident_id, incident_events.c.at)

monitor_samples = sa.Table(
    "monitor_samples", metadata,
    _id(),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("figures", JSONB, nullable=False),
    comment="What `cardmint monitor` measured each round: sustained rules and charts read it.",
)
sa.Index(None, monitor_samples.c.taken_at)

api_tokens = sa.Table(
    "api_tokens", metadata,
    _id(),
    sa.Column("owner", sa.Text, nullable=False),  # who the ledger records for its writes
    sa.Column("scope", sa.Text, nullable=False),
    # SHA-256 of the token: tokens are 32 random bytes, so a fast hash is enough, and the
    # database never holds anything a client could present
    sa.Column("token_hash", sa.LargeBinary, nullable=False),
    sa.Column("prefix", sa.Text, nullable=False),  # the first characters, to tell tokens apart
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(_in("scope", TOKEN_SCOPES), name="scope"),
    sa.CheckConstraint("owner <> ''", name="owner_not_empty"),
    sa.CheckConstraint("octet_length(token_hash) = 32", name="hash_length"),
    sa.UniqueConstraint("token_hash"),
    comment="API tokens, stored hashed; scopes read < write < admin.",
)

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    # keys are per token: two tokens of one owner (two scripts) never share one
    sa.Column("token_id", sa.BigInteger, sa.ForeignKey("api_tokens.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    # SHA-256 of method, path, query and body: the same key for another request is refused
    sa.Column("request_hash", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.Integer),  # null while the first request is still running
    sa.Column("response", JSONB),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.CheckConstraint("char_length(key) BETWEEN 1 AND 200", name="key_length"),
    comment="Responses to POSTs sent with an Idempotency-Key, replayed on a retry for "
            "24 hours.",
)
sa.Index(None, idempotency_keys.c.created_at)  # pruning expired keys
