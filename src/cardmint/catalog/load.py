"""Load the vendored card catalog (sets, cards, variants) into the database.

One transaction: COPY the card documents (one JSON text per card) into a staging table,
let PostgreSQL turn them into typed staging rows, then insert what is new and update what
changed. Rows that are already equal are not touched, so a reload of the same data writes
nothing and keeps every id. Variants are matched on their natural key (card, type,
subtype, size, stamps, foil), so the ids that products, prices and captures reference
survive reloads.

Rows that the data no longer has are deleted on a full load unless something references
them (a product, price or capture): the database's foreign keys decide, and the rows kept
are counted in the report. A sample load adds and updates but never deletes, so loading
the sample into a full catalog leaves it whole.

Variant dedupe rule: within a card, entries with the same natural key (stamps compared as
a set, stored sorted) are one variant; the first entry wins, later ones are dropped and
counted (11 in this data, e.g. a stamp list given twice in a different order).
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg

from cardmint.db import one
from cardmint.db.errors import translate
from cardmint.errors import CardmintError, DatabaseError

Progress = Callable[[str, int, int], None]

SETS_FILE = "sets.json"
CARDS_FILE = "cards.jsonl.gz"
SAMPLE_FILE = "sample-cards.jsonl"

# Serialises concurrent loads (they would otherwise fight over the same rows).
LOAD_LOCK_KEY = 7_204_315_113
COPY_CHUNK = 5_000  # card documents per COPY, so progress moves while staging

# Columns the loader writes (cards.number_key and cards.search_name are generated).
SET_COLUMNS = (
    "id", "name", "series_id", "series_name", "release_date", "printed_total", "card_count",
    "tcg_online_code", "abbreviation", "tcgplayer_group_id", "cardmarket_id",
)
CARD_COLUMNS = (
    "id", "set_id", "local_id", "position", "name", "category", "rarity", "illustrator", "hp",
    "types", "stage", "evolve_from", "dex_ids", "regulation_mark", "trainer_type",
    "energy_type", "retreat", "attacks", "abilities", "weaknesses", "resistances",
    "legal_standard", "legal_expanded",
)
VARIANT_KEY = ("card_id", "type", "subtype", "size", "stamps", "foil")
VARIANT_NULLABLE_KEY = ("subtype", "size", "foil")
VARIANT_COLUMNS = (*VARIANT_KEY, "tcgplayer_product_id", "cardmarket_id", "position")


@dataclass
class TableChanges:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    kept: int = 0  # rows gone from the data but still referenced, so left in place


@dataclass
class LoadReport:
    sets: int  # rows in the database after the load
    cards: int
    variants: int
    changes: dict[str, TableChanges] = field(default_factory=dict)
    duplicate_variants_dropped: int = 0
    duration_s: float = 0.0
    sources: list[str] = field(default_factory=list)
    sample: bool = False

    @property
    def changed(self) -> bool:
        return any(c.inserted or c.updated or c.deleted for c in self.changes.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reading the vendored files ---------------------------------------------------------------
# Python only unpacks and splits lines; PostgreSQL parses the JSON (jsonb input, then
# jsonb_to_record). Measured on the 2-core dev machine: ~0.7 s, against ~1.8 s for
# json.loads plus building typed rows in Python and copying those.

def _data_file(name: str) -> Traversable:
    return resources.files("cardmint.catalog").joinpath("data", name)


def read_card_lines(sample: bool = False) -> list[str]:
    """The card documents of the vendored data, one JSON text per card."""
    if sample:
        text = _data_file(SAMPLE_FILE).read_text(encoding="utf-8")
    else:
        text = gzip.decompress(_data_file(CARDS_FILE).read_bytes()).decode("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def read_sets_json() -> str:
    return _data_file(SETS_FILE).read_text(encoding="utf-8")


# -- SQL --------------------------------------------------------------------------------------

STAGE_SETS_SQL = """
CREATE TEMP TABLE _stage_sets ON COMMIT DROP AS
SELECT * FROM json_to_recordset($1::text::json) AS s(
    id text, name text, series_id text, series_name text, release_date date,
    printed_total integer, card_count integer, tcg_online_code text, abbreviation text,
    tcgplayer_group_id integer, cardmarket_id integer)
"""

# A sample load brings only the sets its cards belong to.
SAMPLE_SETS_SQL = """
DELETE FROM _stage_sets s WHERE NOT EXISTS (SELECT 1 FROM _stage_cards c WHERE c.set_id = s.id)
"""

STAGE_CARDS_SQL = """
CREATE TEMP TABLE _stage_cards ON COMMIT DROP AS
SELECT r.id, r.set_id, r.local_id,
       -- the files list each set's cards in natural number order: keep it
       (row_number() OVER (PARTITION BY r.set_id ORDER BY d.ord))::integer AS position,
       r.name, r.category, r.rarity, r.illustrator, r.hp,
       coalesce(r.types, '{}') AS types, r.stage, r.evolve_from,
       coalesce(r.dex_ids, '{}') AS dex_ids, r.regulation_mark, r.trainer_type,
       r.energy_type, r.retreat,
       coalesce(r.attacks, '[]') AS attacks, coalesce(r.abilities, '[]') AS abilities,
       coalesce(r.weaknesses, '[]') AS weaknesses,
       coalesce(r.resistances, '[]') AS resistances,
       coalesce((r.legal ->> 'standard')::boolean, false) AS legal_standard,
       coalesce((r.legal ->> 'expanded')::boolean, false) AS legal_expanded,
       coalesce(r.variants, '[]') AS variants
FROM _stage_docs d
CROSS JOIN LATERAL jsonb_to_record(d.doc::jsonb) AS r(
    id text, set_id text, local_id text, name text, category text, rarity text,
    illustrator text, hp integer, types text[], stage text, evolve_from text,
    dex_ids integer[], regulation_mark text, trainer_type text, energy_type text,
    retreat integer, attacks jsonb, abilities jsonb, weaknesses jsonb, resistances jsonb,
    variants jsonb, legal jsonb)
"""

# The dedupe rule (see the module docstring): stamps sorted byte-wise so the key does not
# depend on the database's collation; DISTINCT ON keeps each key's first entry.
STAGE_VARIANTS_SQL = """
CREATE TEMP TABLE _stage_card_variants ON COMMIT DROP AS
SELECT card_id, type, subtype, size, stamps, foil, tcgplayer_product_id, cardmarket_id,
       (row_number() OVER (PARTITION BY card_id ORDER BY entry))::integer AS position
FROM (
    SELECT DISTINCT ON (c.id, v.type, v.subtype, v.size, st.stamps, v.foil)
           c.id AS card_id, v.type, v.subtype, v.size, st.stamps, v.foil,
           v.tcgplayer_product_id, v.cardmarket_id, v.ordinality AS entry
    FROM _stage_cards c
    CROSS JOIN LATERAL ROWS FROM (
        jsonb_to_recordset(c.variants) AS (
            type text, subtype text, size text, stamps text[], foil text,
            tcgplayer_product_id integer, cardmarket_id integer)
    ) WITH ORDINALITY AS v
    CROSS JOIN LATERAL (
        SELECT CASE WHEN cardinality(v.stamps) > 1
                    THEN ARRAY(SELECT x FROM unnest(v.stamps) AS x ORDER BY x COLLATE "C")
                    ELSE coalesce(v.stamps, '{}') END AS stamps
    ) AS st
    ORDER BY c.id, v.type, v.subtype, v.size, st.stamps, v.foil, v.ordinality
) AS first_of_each
"""

DROPPED_VARIANTS_SQL = """
SELECT (SELECT coalesce(sum(jsonb_array_length(variants)), 0) FROM _stage_cards)
     - (SELECT count(*) FROM _stage_card_variants)
"""


def _q(name: str) -> str:
    return f'"{name}"'


def _cols(names: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{_q(n)}" for n in names)


def _key_match(key: Sequence[str], nullable: Sequence[str] = ()) -> str:
    """t/s match on the key; nullable parts compare NULL as equal (like the unique key)."""
    return " AND ".join(
        f"t.{_q(k)} IS NOT DISTINCT FROM s.{_q(k)}" if k in nullable else f"t.{_q(k)} = s.{_q(k)}"
        for k in key
    )


def _upsert_sql(table: str, stage: str, columns: Sequence[str], key: Sequence[str],
                conflict: str, nullable_key: Sequence[str] = ()) -> str:
    values = [c for c in columns if c not in key]
    match = _key_match(key, nullable_key)
    # Rows already equal are filtered out before the INSERT, so a reload neither writes
    # nor locks them, nor draws identity values for them.
    # RETURNING (xmax = 0): PostgreSQL leaves xmax 0 on freshly inserted rows only,
    # which tells inserts from updates in one statement.
    return f"""
WITH up AS (
    INSERT INTO {table} AS t ({_cols(columns)})
    SELECT {_cols(columns, "s.")} FROM {stage} s
    WHERE NOT EXISTS (
        SELECT 1 FROM {table} t
        WHERE {match} AND ({_cols(values, "t.")}) IS NOT DISTINCT FROM ({_cols(values, "s.")})
    )
    ON CONFLICT {conflict} DO UPDATE
    SET {", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in values)}, updated_at = now()
    RETURNING (t.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM up
"""


def _stale_sql(table: str, stage: str, key: Sequence[str],
               nullable_key: Sequence[str] = ()) -> str:
    """Ids of rows of `table` whose key the staged data no longer has."""
    return f"""
SELECT t.id FROM {table} t
WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {_key_match(key, nullable_key)})
"""


async def _delete_stale(conn: asyncpg.Connection, table: str, ids: list[Any]) -> TableChanges:
    """Delete rows by id unless referenced; referenced ones are kept and counted."""
    changes = TableChanges()
    if not ids:
        return changes
    sql = f"DELETE FROM {table} WHERE id = ANY($1)"
    try:
        async with conn.transaction():  # a savepoint inside the load's transaction
            changes.deleted = int((await conn.execute(sql, ids)).split()[-1])
        return changes
    except asyncpg.ForeignKeyViolationError:
        pass
    # Some are referenced: find out which, one savepoint each (stale rows are few).
    for row_id in ids:
        try:
            async with conn.transaction():
                changes.deleted += int((await conn.execute(sql, [row_id])).split()[-1])
        except asyncpg.ForeignKeyViolationError:
            changes.kept += 1
    return changes


def _translate(exc: BaseException) -> CardmintError:
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        return DatabaseError(f"the catalog schema is missing ({exc}): run `cardmint db "
                             "upgrade` first", sqlstate=exc.sqlstate)
    return translate(exc, "catalog load")


async def load_catalog(
    conn: asyncpg.Connection,
    *,
    sample: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Load the vendored catalog (or, with `sample`, its 3-set sample) into the database.

    The schema must be migrated. `progress(stage, done, total)` is called as the load goes
    through its stages: read, stage, upsert, prune (full loads only), analyze (when
    something changed).
    """
    started = time.perf_counter()

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    report("read", 0, 1)
    # Unpacking takes ~0.1 s: off the event loop, which may be serving requests.
    lines = await asyncio.to_thread(read_card_lines, sample)
    sets_json = await asyncio.to_thread(read_sets_json)
    report("read", 1, 1)

    try:
        async with conn.transaction():
            result = await _load(conn, lines, sets_json, sample=sample, report=report)
    except CardmintError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise _translate(exc) from exc

    result.duration_s = round(time.perf_counter() - started, 3)
    result.sources = [SETS_FILE, SAMPLE_FILE if sample else CARDS_FILE]
    result.sample = sample
    return result


async def _stage(conn: asyncpg.Connection, lines: list[str], sets_json: str, *, sample: bool,
                 report: Progress) -> int:
    """Fill the staging tables; returns how many variant entries the dedupe rule dropped."""
    # text, not jsonb: the caller's connection may have a jsonb codec (the pools decode
    # json into Python values), and text goes through COPY untouched whatever the codecs.
    await conn.execute("CREATE TEMP TABLE _stage_docs (ord integer, doc text) ON COMMIT DROP")
    # Uncompressed: the documents are written once and read once, right away.
    await conn.execute("ALTER TABLE _stage_docs ALTER COLUMN doc SET STORAGE EXTERNAL")
    total = len(lines)
    report("stage", 0, total)
    for start in range(0, total, COPY_CHUNK):
        chunk = lines[start:start + COPY_CHUNK]
        records = [(start + i + 1, doc) for i, doc in enumerate(chunk)]
        await conn.copy_records_to_table("_stage_docs", records=records)
        report("stage", start + len(chunk), total)

    await conn.execute(STAGE_CARDS_SQL)
    await conn.execute(STAGE_VARIANTS_SQL)
    await conn.execute(STAGE_SETS_SQL, sets_json)
    if sample:
        await conn.execute(SAMPLE_SETS_SQL)
    # Statistics on the join keys only (cheap), so the statements below plan well.
    await conn.execute("ANALYZE _stage_sets (id)")
    await conn.execute("ANALYZE _stage_cards (id)")
    await conn.execute("ANALYZE _stage_card_variants (card_id, type, stamps)")
    return int(await conn.fetchval(DROPPED_VARIANTS_SQL))


BUMP_VERSION_SQL = """
WITH bumped AS (
    UPDATE catalog_version SET version = version + 1, loaded_at = now() RETURNING version)
SELECT pg_notify('catalog_version', version::text) FROM bumped
"""


async def _load(conn: asyncpg.Connection, lines: list[str], sets_json: str, *, sample: bool,
                report: Progress) -> LoadReport:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOAD_LOCK_KEY)
    # The caller's pool may carry a short statement_timeout; a load is a few big statements.
    await conn.execute("SET LOCAL statement_timeout = '5min'")
    # JIT compiles each big statement for ~0.2 s and wins nothing on tables this size.
    await conn.execute("SET LOCAL jit = off")
    dropped = await _stage(conn, lines, sets_json, sample=sample, report=report)

    changes = {name: TableChanges() for name in ("sets", "cards", "card_variants")}
    steps = (
        ("sets", _upsert_sql("sets", "_stage_sets", SET_COLUMNS, ("id",), "(id)")),
        ("cards", _upsert_sql("cards", "_stage_cards", CARD_COLUMNS, ("id",), "(id)")),
        ("card_variants", _upsert_sql(
            "card_variants", "_stage_card_variants", VARIANT_COLUMNS, VARIANT_KEY,
            "ON CONSTRAINT uq_card_variants_natural_key", VARIANT_NULLABLE_KEY)),
    )
    for i, (table, sql) in enumerate(steps):
        report("upsert", i, len(steps))
        row = one(await conn.fetchrow(sql))
        changes[table].inserted, changes[table].updated = row["inserted"], row["updated"]
    report("upsert", len(steps), len(steps))

    if not sample:
        # Children first: stale variants of live cards, then cards (their variants go with
        # them by cascade), then sets; a referenced row makes its delete fail and stays.
        prune_steps = (
            ("card_variants", _stale_sql("card_variants", "_stage_card_variants",
                                         VARIANT_KEY, VARIANT_NULLABLE_KEY)),
            ("cards", _stale_sql("cards", "_stage_cards", ("id",))),
            ("sets", _stale_sql("sets", "_stage_sets", ("id",))),
        )
        for i, (table, sql) in enumerate(prune_steps):
            report("prune", i, len(prune_steps))
            ids = [r[0] for r in await conn.fetch(sql)]
            pruned = await _delete_stale(conn, table, ids)
            changes[table].deleted, changes[table].kept = pruned.deleted, pruned.kept
        report("prune", len(prune_steps), len(prune_steps))

    if any(c.inserted or c.updated or c.deleted for c in changes.values()):
        # Fresh statistics for the columns searches filter on, so they plan well at once
        # (autovacuum does the rest later). A role that does not own the tables gets a
        # warning here, not an error.
        report("analyze", 0, 1)
        await conn.execute(
            "ANALYZE sets, card_variants (card_id, type), cards (id, set_id, local_id, "
            "number_key, name, search_name, category, rarity, stage, types, dex_ids)"
        )
        report("analyze", 1, 1)
        # In the load's transaction: the servers' catalog caches (catalog/cache.py) drop
        # what they hold once this commits; NOTIFY is delivered at commit, not before.
        await conn.execute(BUMP_VERSION_SQL)

    counts = one(await conn.fetchrow(
        "SELECT (SELECT count(*) FROM sets) AS sets, (SELECT count(*) FROM cards) AS cards, "
        "(SELECT count(*) FROM card_variants) AS variants"
    ))
    return LoadReport(sets=counts["sets"], cards=counts["cards"], variants=counts["variants"],
                      changes={"sets": changes["sets"], "cards": changes["cards"],
                               "variants": changes["card_variants"]},
                      duplicate_variants_dropped=dropped)
