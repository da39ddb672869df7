"""Migrations: upgrade/downgrade round trip, schema.py and 0001 agree, database-enforced rules."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from cardmint.config import get_settings
from cardmint.db import migrate
from cardmint.db.schema import metadata
from cardmint.errors import ConfigError, DatabaseUnavailable, UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = set(metadata.tables)
HEAD = "0012"


async def _upgrade(dsn: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate.upgrade, dsn, revision)


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def _autogenerate_diff(dsn: str) -> list[Any]:
    engine = create_async_engine("postgresql+asyncpg://",
                                 async_creator=lambda: asyncpg.connect(dsn))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync_conn: compare_metadata(
                MigrationContext.configure(sync_conn, opts={
                    "compare_type": True, "compare_server_default": True}),
                metadata,
            ))
    finally:
        await engine.dispose()


async def _definitions(conn: asyncpg.Connection, schema: str) -> dict[str, set[Any]]:
    """What PostgreSQL says about a schema's tables, with the schema name taken out."""

    def strip(text: str | None) -> str | None:
        return text.replace(f"{schema}.", "") if text else text

    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default, "
        "generation_expression, is_identity, identity_generation "
        "FROM information_schema.columns WHERE table_schema = $1", schema)
    constraints = await conn.fetch(
        "SELECT c.relname, con.conname, pg_get_constraintdef(con.oid) AS def "
        "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1", schema)
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema)
    comments = await conn.fetch(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind = 'r'", schema)
    # Only our tables: the database may hold others (alembic_version, extension views).
    return {
        "columns": {tuple(strip(v) if isinstance(v, str) else v for v in r.values())
                    for r in columns if r["table_name"] in TABLES},
        "constraints": {(r["relname"], r["conname"], strip(r["def"]))
                        for r in constraints if r["relname"] in TABLES},
        "indexes": {(r["tablename"], r["indexname"], strip(r["indexdef"]))
                    for r in indexes if r["tablename"] in TABLES},
        "comments": {tuple(r.values()) for r in comments if r["relname"] in TABLES},
    }


async def _seed_product(conn: asyncpg.Connection, sku: str = "TST-1-NM") -> dict[str, int]:
    """A set, card, variant, product, item and its first ledger entry."""
    await conn.execute(
        "INSERT INTO sets (id, name, series_id, series_name, card_count) "
        "VALUES ('tst', 'Test Set', 'tst', 'Test', 1) ON CONFLICT DO NOTHING")
    await conn.execute(
        "INSERT INTO cards (id, set_id, local_id, position, name, category) "
        "VALUES ('tst-001', 'tst', '001', 1, 'Pokémon Testmon', 'Pokemon') "
        "ON CONFLICT DO NOTHING")
    variant = await conn.fetchval(
        "INSERT INTO card_variants (card_id, type, position) VALUES ('tst-001', 'normal', 1) "
        "ON CONFLICT ON CONSTRAINT uq_card_variants_natural_key "
        "DO UPDATE SET position = excluded.position RETURNING id")
    product = await conn.fetchval(
        "INSERT INTO products (card_id, variant_id, condition, sku) "
        "VALUES ('tst-001', $1, 'NM', $2) RETURNING id", variant, sku)
    item = await conn.fetchval(
        "INSERT INTO inventory_items (product_id, acquisition_cost_cents, location) "
        "VALUES ($1, 250, 'box-1') RETURNING id", product)
    await conn.execute(
        "INSERT INTO inventory_ledger (item_id, product_id, event, to_status, to_location, "
        "amount_cents, actor) VALUES ($1, $2, 'acquired', 'IN_STOCK', 'box-1', 250, 'test')",
        item, product)
    return {"variant": variant, "product": product, "item": item}


async def test_upgrade_sets_current_to_head(empty_database: str) -> None:
    assert migrate.head() == HEAD
    assert await asyncio.to_thread(migrate.current, empty_database) is None
    await _upgrade(empty_database)
    assert await asyncio.to_thread(migrate.current, empty_database) == HEAD

    conn = await asyncpg.connect(empty_database)
    try:
        assert await _tables(conn) == TABLES | {"alembic_version"}
        # Derived columns are generated by the database.
        await _seed_product(conn)
        row = await conn.fetchrow("SELECT number_key, search_name FROM cards")
        assert (row["number_key"], row["search_name"]) == ("1", "pokemon testmon")
    finally:
        await conn.close()


async def test_schema_py_and_migration_agree(empty_database: str) -> None:
    await _upgrade(empty_database)
    # What alembic autogenerate would put in a new revision: nothing.
    assert await _autogenerate_diff(empty_database) == []

    # Autogenerate ignores CHECK constraints, computed expressions and some index details:
    # build schema.py's tables in a second schema and compare what PostgreSQL reports.
    conn = await asyncpg.connect(empty_database)
    engine = create_async_engine("postgresql+asyncpg://",
                                 async_creator=lambda: asyncpg.connect(empty_database))
    try:
        await conn.execute("CREATE SCHEMA declared")
        async with engine.begin() as sa_conn:
            await sa_conn.run_sync(lambda c: metadata.create_all(
                c.execution_options(schema_translate_map={None: "declared"})))
        migrated = await _definitions(conn, "public")
        declared = await _definitions(conn, "declared")
        for kind in ("columns", "constraints", "indexes", "comments"):
            assert migrated[kind] == declared[kind], kind
        assert len(migrated["constraints"]) > 80
    finally:
        await engine.dispose()
        await conn.close()


async def test_downgrade_to_base_and_upgrade_again(empty_database: str) -> None:
    await _upgrade(empty_database)
    await asyncio.to_thread(migrate.downgrade, empty_database, "base")
    assert await asyncio.to_thread(migrate.current, empty_database) is None

    conn = await asyncpg.connect(empty_database)
    try:
        assert await _tables(conn) == {"alembic_version"}
        functions = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname IN "
            "('fold_search', 'inventory_ledger_append_only')")
        assert functions == 0
        # pg_trgm is left in place on purpose (it may have been there before).
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")
    finally:
        await conn.close()

    await _upgrade(empty_database)
    assert await asyncio.to_thread(migrate.current, empty_database) == HEAD
    # one step at a time, down and up again
    await asyncio.to_thread(migrate.downgrade, empty_database, "0001")
    assert await asyncio.to_thread(migrate.current, empty_database) == "0001"
    await _upgrade(empty_database)
    assert await asyncio.to_thread(migrate.current, empty_database) == HEAD


async def test_ledger_is_append_only(empty_database: str) -> None:
    await _upgrade(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        ids = await _seed_product(conn)
        for sql in ("UPDATE inventory_ledger SET reason = 'edited'",
                    "DELETE FROM inventory_ledger",
                    "TRUNCATE inventory_ledger"):
            with pytest.raises(asyncpg.RestrictViolationError) as caught:
                await conn.execute(sql)
            assert caught.value.constraint_name == "inventory_ledger_append_only"
        # Appending still works, and the first entry is untouched.
        await conn.execute(
            "INSERT INTO inventory_ledger (item_id, product_id, event, from_location, "
            "to_location, actor) VALUES ($1, $2, 'moved', 'box-1', 'box-2', 'test')",
            ids["item"], ids["product"])
        rows = await conn.fetch("SELECT event, reason FROM inventory_ledger ORDER BY id")
        assert [(r["event"], r["reason"]) for r in rows] == [("acquired", None), ("moved", None)]
        # Items with history cannot disappear either.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("DELETE FROM inventory_items")
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("sql", "error", "constraint"),
    [
        ("UPDATE inventory_items SET acquisition_cost_cents = -1",
         asyncpg.CheckViolationError, "ck_inventory_items_cost_not_negative"),
        ("UPDATE inventory_items SET status = 'LOST'",
         asyncpg.CheckViolationError, "ck_inventory_items_status"),
        ("UPDATE inventory_items SET grade = 9.5",
         asyncpg.CheckViolationError, "ck_inventory_items_grade_with_company"),
        ("UPDATE inventory_items SET grade = 11, grading_company = 'PSA'",
         asyncpg.CheckViolationError, "ck_inventory_items_grade_range"),
        ("INSERT INTO products (card_id, variant_id, condition, sku) "
         "SELECT card_id, variant_id, 'LP', 'TST-1-NM' FROM products",
         asyncpg.UniqueViolationError, "uq_products_sku"),
        ("INSERT INTO products (card_id, variant_id, condition, sku) "
         "SELECT card_id, variant_id, 'NM', 'OTHER' FROM products",
         asyncpg.UniqueViolationError, "uq_products_variant_id_condition_language"),
        ("UPDATE products SET condition = 'MINT'",
         asyncpg.CheckViolationError, "ck_products_condition"),
        ("INSERT INTO prices (card_id, variant_id, source, price_cents) "
         "SELECT card_id, variant_id, 'tcgplayer', -5 FROM products",
         asyncpg.CheckViolationError, "ck_prices_price_not_negative"),
        ("INSERT INTO cards (id, set_id, local_id, position, name, category) "
         "VALUES ('tst-9', 'tst', '003', 3, 'Nope', 'Pokemon')",
         asyncpg.CheckViolationError, "ck_cards_id_is_set_and_local_id"),
        ("INSERT INTO card_variants (card_id, type, position) VALUES ('tst-001', 'normal', 2)",
         asyncpg.UniqueViolationError, "uq_card_variants_natural_key"),
        ("INSERT INTO products (card_id, variant_id, condition, sku) "
         "SELECT 'base1-4', variant_id, 'HP', 'WRONG-CARD' FROM products",
         asyncpg.ForeignKeyViolationError, "fk_products_variant_id_card_id_card_variants"),
    ],
)
async def test_constraints_refuse_bad_rows(empty_database: str, sql: str, error: type,
                                           constraint: str) -> None:
    await _upgrade(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await _seed_product(conn)
        with pytest.raises(error) as caught:
            await conn.execute(sql)
        assert caught.value.constraint_name == constraint
    finally:
        await conn.close()


async def test_job_queue_rules(empty_database: str) -> None:
    await _upgrade(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        capture = await conn.fetchval(
            "INSERT INTO captures (image_ref) VALUES ('scans/1.jpg') RETURNING id")
        await conn.execute(
            "INSERT INTO processing_jobs (capture_id, kind) VALUES ($1, 'identify')", capture)
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await conn.execute(
                "INSERT INTO processing_jobs (capture_id, kind) VALUES ($1, 'identify')",
                capture)
        assert caught.value.constraint_name == "uq_processing_jobs_open_capture_kind"
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await conn.execute("UPDATE processing_jobs SET attempts = 6")
        assert caught.value.constraint_name == "ck_processing_jobs_attempts_within_max"
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await conn.execute("UPDATE processing_jobs SET status = 'running'")
        assert caught.value.constraint_name == "ck_processing_jobs_running_is_locked"
        # A finished job frees the slot for a new one of the same kind.
        await conn.execute(
            "UPDATE processing_jobs SET status = 'succeeded', finished_at = now()")
        await conn.execute(
            "INSERT INTO processing_jobs (capture_id, kind) VALUES ($1, 'identify')", capture)
        # The dequeue query can use the partial index.
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT id FROM processing_jobs WHERE status IN ('queued', 'running') "
            "ORDER BY priority, run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED"))
        assert "ix_processing_jobs_ready" in plan
    finally:
        await conn.close()


async def test_connection_errors_are_mapped_and_redacted() -> None:
    dsn = "postgresql://cardmint:s3cret-pw@127.0.0.1:1/cardmint"
    for call in (lambda: migrate.upgrade(dsn), lambda: migrate.current(dsn)):
        with pytest.raises(DatabaseUnavailable) as caught:
            await asyncio.to_thread(call)
        assert "s3cret-pw" not in str(caught.value)
        assert "127.0.0.1:1" in str(caught.value)


async def test_refuses_to_run_inside_an_event_loop(empty_database: str) -> None:
    with pytest.raises(UsageError, match="to_thread"):
        migrate.upgrade(empty_database)


async def test_alembic_command_line_from_repo_root(empty_database: str) -> None:
    def alembic(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"dsn={empty_database}", *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
        return done.stdout + done.stderr

    await asyncio.to_thread(alembic, "upgrade", "head")
    assert f"{HEAD} (head)" in await asyncio.to_thread(alembic, "current")


async def test_env_takes_the_settings_dsn_or_says_what_is_missing(
    empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No .env, no cluster state, no environment: a clear error naming the variable.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CARDMINT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CARDMINT_MIGRATION_URL", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="CARDMINT_MIGRATION_URL"):
            await asyncio.to_thread(command.upgrade, migrate.alembic_config(), "head")

        monkeypatch.setenv("CARDMINT_MIGRATION_URL", empty_database)
        get_settings.cache_clear()
        await asyncio.to_thread(command.upgrade, migrate.alembic_config(), "head")
    finally:
        get_settings.cache_clear()
    assert await asyncio.to_thread(migrate.current, empty_database) == HEAD


async def test_revision_autogenerates_nothing_at_head(
    empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Work on a copy so no stray revision can land in the package.
    copy = tmp_path / "migrations"
    shutil.copytree(Path(migrate.__file__).parent / "migrations", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", str(copy))
    await _upgrade(empty_database)

    path = Path(await asyncio.to_thread(migrate.revision, empty_database, "no changes"))
    assert path.parent == copy / "versions"
    assert path.name == f"{int(HEAD) + 1:04d}_no_changes.py"
    text = await asyncio.to_thread(path.read_text)
    assert f"down_revision: str | None = '{HEAD}'" in text
    body = text.split("def upgrade() -> None:", 1)[1].split("def downgrade", 1)[0]
    statements = [line.strip() for line in body.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    assert statements == ["pass"]


CATALOG_ROWS = """
INSERT INTO sets (id, name, series_id, series_name, card_count)
VALUES ('s1', 'One', 'x', 'X', 2), ('s2', 'Two', 'x', 'X', 1);
INSERT INTO cards (id, set_id, local_id, position, name, category)
VALUES ('s1-1', 's1', '1', 1, 'A', 'Pokemon'), ('s1-2', 's1', '2', 2, 'B', 'Pokemon'),
       ('s2-1', 's2', '1', 1, 'C', 'Pokemon');
INSERT INTO card_variants (card_id, type, position)
VALUES ('s1-1', 'normal', 1), ('s1-2', 'normal', 1), ('s2-1', 'holo', 1);
INSERT INTO products (card_id, variant_id, condition, sku)
SELECT v.card_id, v.id, c, v.card_id || c FROM card_variants v, unnest('{NM,LP}'::text[]) c;
INSERT INTO inventory_items (product_id, status, location, grading_company, grade,
                             cert_number)
SELECT p.id, (ARRAY['IN_STOCK', 'SOLD'])[1 + g % 2], (ARRAY['Box-1', 'box-2', NULL])[1 + g % 3],
       CASE WHEN g % 4 = 0 THEN 'PSA' END, CASE WHEN g % 4 = 0 THEN 9 END,
       CASE WHEN g % 4 = 0 THEN 'C' || p.id || '-' || g END
FROM products p, generate_series(1, 5) g
"""
SHELVES_0011 = """
SELECT lower(location) COLLATE "C", status, count(*)::bigint, count(grading_company)::bigint
FROM inventory_items GROUP BY 1, 2 ORDER BY 1, 2
"""


async def test_0012_copies_and_counts_the_items_there_are(empty_database: str) -> None:
    """Upgrading with items in place: each gets its product's set and condition, the set
    totals and the shelf totals per condition hold them; a downgrade puts 0011's shelf
    totals back, as exact."""
    await _upgrade(empty_database, "0011")
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(CATALOG_ROWS)
        shelves_before = await conn.fetch(
            "SELECT location_key, status, items, graded FROM inventory_shelf_totals "
            "ORDER BY 1, 2")
        assert [tuple(r) for r in shelves_before] == [
            tuple(r) for r in await conn.fetch(SHELVES_0011)]
        await _upgrade(empty_database, "0012")
        assert await conn.fetchval(
            "SELECT count(*) FROM inventory_items i JOIN products p ON p.id = i.product_id "
            "JOIN cards c ON c.id = p.card_id "
            "WHERE (i.set_id, i.condition) = (c.set_id, p.condition)") == 30
        sets = await conn.fetch(
            "SELECT set_id, condition, status, items, graded FROM inventory_set_totals "
            "EXCEPT SELECT c.set_id, p.condition, i.status, count(*), count(i.grading_company) "
            "FROM inventory_items i JOIN products p ON p.id = i.product_id "
            "JOIN cards c ON c.id = p.card_id GROUP BY 1, 2, 3")
        assert sets == [] and await conn.fetchval(
            "SELECT sum(items) FROM inventory_set_totals") == 30
        assert await conn.fetch(
            "SELECT lower(location) COLLATE \"C\", condition, status, count(*), "
            "count(grading_company) FROM inventory_items GROUP BY 1, 2, 3 EXCEPT "
            "SELECT location_key, condition, status, items, graded "
            "FROM inventory_shelf_totals") == []
        # a new item gets its copies and lands in the totals, through the triggers
        in_stock = ("SELECT items FROM inventory_set_totals WHERE (set_id, condition, status)"
                    " = ('s2', 'LP', 'IN_STOCK')")
        before = await conn.fetchval(in_stock)
        await conn.execute("INSERT INTO inventory_items (product_id, location) SELECT id, "
                           "'box-9' FROM products WHERE card_id = 's2-1' AND condition = 'LP'")
        assert await conn.fetchval(in_stock) == before + 1 == 3
        await asyncio.to_thread(migrate.downgrade, empty_database, "0011")
        assert [tuple(r) for r in await conn.fetch(
            "SELECT location_key, status, items, graded FROM inventory_shelf_totals "
            "ORDER BY 1, 2")] == [tuple(r) for r in await conn.fetch(SHELVES_0011)]
    finally:
        await conn.close()
