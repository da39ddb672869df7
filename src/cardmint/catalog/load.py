"""Load the vendored card catalog (sets, cards, variants) into the database.

One transaction: COPY the data into temporary staging tables, then insert what is new and
update what changed (rows that are already equal are not touched, so a reload of the same
data writes nothing and keeps every id). Variants are matched on their natural key
(card, type, subtype, size, stamps, foil), so the ids that products, prices and captures
reference survive reloads.

Rows that the data no longer has are deleted on a full load unless something references
them (a product, price or capture): the database's foreign keys decide, and the rows kept
are counted in the report. A sample load adds and updates but never deletes, so loading
the sample into a full catalog leaves it whole.

Variant dedupe rule: within a card, entries with the same natural key (stamps compared as
a set, stored sorted) are one variant; the first entry wins, later ones are dropped and
counted (11 in this data, e.g. a stamp list given twice in a different order).
"""

from __future__ import annotations

import gzip
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import resources
from typing import Any

import asyncpg

from cardmint.errors import (
    CardmintError,
    ConstraintViolation,
    DatabaseError,
    DatabaseUnavailable,
    QueryTimeout,
)

Progress = Callable[[str, int, int], None]

SETS_FILE = "sets.json"
CARDS_FILE = "cards.jsonl.gz"
SAMPLE_FILE = "sample-cards.jsonl"

# Serialises concurrent loads (they would otherwise fight over the same rows).
LOAD_LOCK_KEY = 7_204_315_113
COPY_CHUNK = 5_000

SET_COLUMNS = (
    "id", "name", "series_id", "series_name", "release_date", "printed_total", "card_count",
    "tcg_online_code", "abbreviation", "tcgplayer_group_id", "cardmarket_id",
)
CARD_COLUMNS = (
    "id", "set_id", "local_id", "number_key", "position", "name", "search_name", "category",
    "rarity", "illustrator", "hp", "types", "stage", "evolve_from", "dex_ids",
    "regulation_mark", "trainer_type", "energy_type", "retreat", "attacks", "abilities",
    "weaknesses", "resistances", "legal_standard", "legal_expanded",
)
VARIANT_KEY = ("card_id", "type", "subtype", "size", "stamps", "foil")
VARIANT_COLUMNS = (*VARIANT_KEY, "tcgplayer_product_id", "cardmarket_id", "position")

_LEADING_ZEROS = re.compile(r"^0+(?=\d)")


def normalize_name(text: str) -> str:
    """Card name for accent- and case-insensitive search: "Pokémon  Center" -> "pokemon center".

    Searches must normalize the query with this same function before comparing it to
    cards.search_name.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def number_key(local_id: str) -> str:
    """Collector number for lookups: lower case, no leading zeros ("004" -> "4", "TG01" -> "tg01")."""
    return _LEADING_ZEROS.sub("", local_id).lower()


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


# -- reading the vendored data --------------------------------------------------------------

def _data_file(name: str) -> Any:
    return resources.files("cardmint.catalog").joinpath("data", name)


def _read_cards(sample: bool) -> list[dict[str, Any]]:
    if sample:
        with _data_file(SAMPLE_FILE).open("r", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    with _data_file(CARDS_FILE).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_sets() -> list[dict[str, Any]]:
    with _data_file(SETS_FILE).open("r", encoding="utf-8") as f:
        return json.load(f)


def _json(value: Any) -> str:
    # asyncpg sends jsonb as text by default.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _set_record(s: dict[str, Any]) -> tuple[Any, ...]:
    released = s.get("release_date")
    return (
        s["id"], s["name"], s["series_id"], s["series_name"],
        date.fromisoformat(released) if released else None,
        s.get("printed_total"), s["card_count"], s.get("tcg_online_code"),
        s.get("abbreviation"), s.get("tcgplayer_group_id"), s.get("cardmarket_id"),
    )


def _card_record(c: dict[str, Any], position: int) -> tuple[Any, ...]:
    legal = c.get("legal") or {}
    return (
        c["id"], c["set_id"], c["local_id"], number_key(c["local_id"]), position, c["name"],
        normalize_name(c["name"]), c["category"], c.get("rarity"), c.get("illustrator"),
        c.get("hp"), c.get("types") or [], c.get("stage"), c.get("evolve_from"),
        c.get("dex_ids") or [], c.get("regulation_mark"), c.get("trainer_type"),
        c.get("energy_type"), c.get("retreat"), _json(c.get("attacks") or []),
        _json(c.get("abilities") or []), _json(c.get("weaknesses") or []),
        _json(c.get("resistances") or []), bool(legal.get("standard")),
        bool(legal.get("expanded")),
    )


def variant_records(card: dict[str, Any]) -> tuple[list[tuple[Any, ...]], int]:
    """A card's variant rows after the dedupe rule, and how many entries it dropped."""
    rows: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    for v in card.get("variants") or []:
        stamps = sorted(v.get("stamps") or [])
        key = (v["type"], v.get("subtype"), v.get("size"), tuple(stamps), v.get("foil"))
        if key in seen:
            continue
        seen.add(key)
        rows.append((card["id"], v["type"], v.get("subtype"), v.get("size"), stamps,
                     v.get("foil"), v.get("tcgplayer_product_id"), v.get("cardmarket_id"),
                     len(rows) + 1))
    return rows, len(card.get("variants") or []) - len(rows)


@dataclass
class _Data:
    sets: list[tuple[Any, ...]]
    cards: list[tuple[Any, ...]]
    variants: list[tuple[Any, ...]]
    duplicates: int
    sources: list[str]


def read_data(sample: bool = False) -> _Data:
    """The vendored catalog as rows for the staging tables (no database involved)."""
    raw_cards = _read_cards(sample)
    set_ids = {c["set_id"] for c in raw_cards}
    sets = [_set_record(s) for s in _read_sets() if not sample or s["id"] in set_ids]
    positions: dict[str, int] = {}
    cards: list[tuple[Any, ...]] = []
    variants: list[tuple[Any, ...]] = []
    duplicates = 0
    # The files list cards in natural number order within a set: keep it as `position`.
    for c in raw_cards:
        positions[c["set_id"]] = positions.get(c["set_id"], 0) + 1
        cards.append(_card_record(c, positions[c["set_id"]]))
        rows, dropped = variant_records(c)
        variants.extend(rows)
        duplicates += dropped
    sources = [SETS_FILE, SAMPLE_FILE if sample else CARDS_FILE]
    return _Data(sets, cards, variants, duplicates, sources)


# -- SQL --------------------------------------------------------------------------------------

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


def _stale_sql(table: str, stage: str, key: Sequence[str], id_column: str,
               nullable_key: Sequence[str] = ()) -> str:
    return f"""
SELECT t.{_q(id_column)} FROM {table} t
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


def _translate(exc: Exception) -> CardmintError:
    """cardmint.errors for what asyncpg raised during a load."""
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, asyncpg.UndefinedTableError):
        return DatabaseError(f"catalog tables are missing ({message}): run `cardmint db "
                             "upgrade` first", sqlstate=exc.sqlstate)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return ConstraintViolation(f"catalog data broke a rule: {message}",
                                   constraint=exc.constraint_name, table=exc.table_name,
                                   sqlstate=exc.sqlstate)
    if isinstance(exc, asyncpg.QueryCanceledError):
        return QueryTimeout(f"catalog load cancelled: {message}", sqlstate=exc.sqlstate)
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                  | asyncpg.CannotConnectNowError | OSError | TimeoutError):
        return DatabaseUnavailable(f"database connection lost during catalog load: {message}",
                                   sqlstate=getattr(exc, "sqlstate", None))
    return DatabaseError(f"catalog load failed: {message}",
                         sqlstate=getattr(exc, "sqlstate", None))


async def load_catalog(
    conn: asyncpg.Connection,
    *,
    sample: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Load the vendored catalog (or its 3-set sample) into the migrated database."""
    started = time.perf_counter()

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    report("read", 0, 1)
    data = read_data(sample)
    report("read", 1, 1)

    try:
        async with conn.transaction():
            result = await _load(conn, data, prune=not sample, report=report)
    except CardmintError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise _translate(exc) from exc

    result.duration_s = round(time.perf_counter() - started, 3)
    result.sources = data.sources
    result.sample = sample
    result.duplicate_variants_dropped = data.duplicates
    return result


async def _load(conn: asyncpg.Connection, data: _Data, *, prune: bool,
                report: Progress) -> LoadReport:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOAD_LOCK_KEY)
    # The caller's pool may carry a short statement_timeout; a load is a few big statements.
    await conn.execute("SET LOCAL statement_timeout = '5min'")

    staged = (
        ("sets", "_stage_sets", SET_COLUMNS, data.sets),
        ("cards", "_stage_cards", CARD_COLUMNS, data.cards),
        ("card_variants", "_stage_card_variants", VARIANT_COLUMNS, data.variants),
    )
    total = sum(len(rows) for *_, rows in staged)
    done = 0
    report("stage", done, total)
    for table, stage, columns, rows in staged:
        # Same column types as the real table, none of its constraints.
        await conn.execute(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
                           f"SELECT {_cols(columns)} FROM {table} WITH NO DATA")
        for start in range(0, len(rows), COPY_CHUNK):
            chunk = rows[start:start + COPY_CHUNK]
            await conn.copy_records_to_table(stage, records=chunk, columns=list(columns))
            done += len(chunk)
            report("stage", done, total)
        await conn.execute(f"ANALYZE {stage}")  # good join plans for the statements below

    changes = {name: TableChanges() for name in ("sets", "cards", "card_variants")}
    steps = (
        ("sets", _upsert_sql("sets", "_stage_sets", SET_COLUMNS, ("id",), "(id)")),
        ("cards", _upsert_sql("cards", "_stage_cards", CARD_COLUMNS, ("id",), "(id)")),
        ("card_variants", _upsert_sql(
            "card_variants", "_stage_card_variants", VARIANT_COLUMNS, VARIANT_KEY,
            "ON CONSTRAINT uq_card_variants_natural_key",
            nullable_key=("subtype", "size", "foil"))),
    )
    for i, (table, sql) in enumerate(steps):
        report("upsert", i, len(steps))
        row = await conn.fetchrow(sql)
        changes[table].inserted, changes[table].updated = row["inserted"], row["updated"]
    report("upsert", len(steps), len(steps))

    if prune:
        # Children first: stale variants of live cards, then cards (their variants go with
        # them by cascade), then sets; a referenced row makes its delete fail and stays.
        prune_steps = (
            ("card_variants", _stale_sql("card_variants", "_stage_card_variants",
                                         VARIANT_KEY, "id", ("subtype", "size", "foil"))),
            ("cards", _stale_sql("cards", "_stage_cards", ("id",), "id")),
            ("sets", _stale_sql("sets", "_stage_sets", ("id",), "id")),
        )
        for i, (table, sql) in enumerate(prune_steps):
            report("prune", i, len(prune_steps))
            ids = [r[0] for r in await conn.fetch(sql)]
            pruned = await _delete_stale(conn, table, ids)
            changes[table].deleted, changes[table].kept = pruned.deleted, pruned.kept
        report("prune", len(prune_steps), len(prune_steps))

    if any(c.inserted or c.updated or c.deleted for c in changes.values()):
        # Fresh statistics now, so trigram and number searches plan well right away.
        # (A role that does not own the tables gets a warning here, not an error.)
        report("analyze", 0, 1)
        await conn.execute("ANALYZE sets, cards, card_variants")
        report("analyze", 1, 1)

    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM sets) AS sets, (SELECT count(*) FROM cards) AS cards, "
        "(SELECT count(*) FROM card_variants) AS variants"
    )
    return LoadReport(sets=counts["sets"], cards=counts["cards"], variants=counts["variants"],
                      changes={"sets": changes["sets"], "cards": changes["cards"],
                               "variants": changes["card_variants"]})
