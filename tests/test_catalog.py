"""Catalog loading: counts, idempotent reloads with stable ids, pruning, sample, search."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import pytest

from cardmint.catalog.load import LoadReport, load_catalog
from cardmint.db import migrate
from cardmint.db.pool import init_connection
from cardmint.errors import DatabaseError

DATA = resources.files("cardmint.catalog").joinpath("data")


def _expected(sample: bool) -> dict[str, int]:
    """Counts worked out from the files here, independently of the loader's SQL."""
    if sample:
        lines = DATA.joinpath("sample-cards.jsonl").read_text(encoding="utf-8").splitlines()
    else:
        raw = gzip.decompress(DATA.joinpath("cards.jsonl.gz").read_bytes()).decode("utf-8")
        lines = raw.splitlines()
    cards = [json.loads(line) for line in lines if line.strip()]
    variants = 0
    for card in cards:
        # The dedupe rule: one variant per (type, subtype, size, set of stamps, foil).
        variants += len({(v["type"], v["subtype"], v["size"], tuple(sorted(v["stamps"])),
                          v["foil"]) for v in card["variants"]})
    return {"cards": len(cards), "sets": len({c["set_id"] for c in cards}),
            "variants": variants,
            "entries": sum(len(c["variants"]) for c in cards)}


FULL = _expected(sample=False)
SAMPLE = _expected(sample=True)


@pytest.fixture
async def conn(empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a freshly migrated database."""
    await asyncio.to_thread(migrate.upgrade, empty_database)
    connection = await asyncpg.connect(empty_database)
    try:
        yield connection
    finally:
        await connection.close()


async def _variant_ids(conn: asyncpg.Connection) -> dict[tuple[Any, ...], int]:
    rows = await conn.fetch(
        "SELECT id, card_id, type, subtype, size, stamps, foil FROM card_variants")
    return {(r["card_id"], r["type"], r["subtype"], r["size"], tuple(r["stamps"]), r["foil"]):
            r["id"] for r in rows}


def _changes(report: LoadReport) -> dict[str, tuple[int, int, int, int]]:
    return {name: (c.inserted, c.updated, c.deleted, c.kept)
            for name, c in report.changes.items()}


def test_the_files_are_what_the_readme_says() -> None:
    assert (FULL["cards"], FULL["sets"]) == (21_066, 199)
    assert (SAMPLE["cards"], SAMPLE["sets"]) == (492, 3)
    assert len(json.loads(DATA.joinpath("sets.json").read_text(encoding="utf-8"))) == 199
    assert DATA.joinpath("LICENSE").read_text(encoding="utf-8").startswith("MIT")


async def test_full_load(conn: asyncpg.Connection) -> None:
    stages: list[tuple[str, int, int]] = []
    report = await load_catalog(conn, progress=lambda *step: stages.append(step))

    assert (report.sets, report.cards, report.variants) == (199, 21_066, FULL["variants"])
    assert report.variants == 33_771
    assert report.duplicate_variants_dropped == FULL["entries"] - FULL["variants"] == 11
    assert _changes(report) == {"sets": (199, 0, 0, 0), "cards": (21_066, 0, 0, 0),
                                "variants": (FULL["variants"], 0, 0, 0)}
    assert report.sources == ["sets.json", "cards.jsonl.gz"]
    assert 0 < report.duration_s < 60
    seen = [name for name, _, _ in stages]
    assert seen[0] == "read" and seen[-1] == "analyze"
    assert {"stage", "upsert", "prune"} <= set(seen)
    assert ("stage", 21_066, 21_066) in stages

    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM sets) AS sets, (SELECT count(*) FROM cards) AS cards, "
        "(SELECT count(*) FROM card_variants) AS variants")
    assert tuple(counts.values()) == (199, 21_066, FULL["variants"])

    # Data survives the trip: a known card, its game text and its printings.
    card = await conn.fetchrow("SELECT * FROM cards WHERE id = 'base1-4'")
    assert (card["name"], card["hp"], card["position"], card["number_key"]) == (
        "Charizard", 120, 4, "4")
    assert json.loads(card["attacks"])[0]["name"] == "Fire Spin"
    stamped = await conn.fetchval(
        "SELECT stamps FROM card_variants WHERE card_id = 'ex5-9' AND stamps @> '{staff}'")
    assert stamped == ["national-championships", "staff"]  # sorted, one row for both orders

    # Loading the sample into the full catalog changes nothing (a sample never prunes).
    again = await load_catalog(conn, sample=True)
    assert not again.changed
    assert (again.sets, again.cards, again.variants) == (199, 21_066, FULL["variants"])


async def test_reload_is_idempotent_keeps_ids_and_prunes_only_unreferenced(
    conn: asyncpg.Connection,
) -> None:
    await load_catalog(conn)
    ids = await _variant_ids(conn)

    second = await load_catalog(conn)
    assert not second.changed
    assert _changes(second) == {name: (0, 0, 0, 0) for name in ("sets", "cards", "variants")}
    assert (second.sets, second.cards, second.variants) == (199, 21_066, FULL["variants"])
    assert await _variant_ids(conn) == ids

    # Drift the database away from the data: an edited name, rows the data does not have
    # (some referenced by a product), and a printing upstream never listed.
    await conn.execute("UPDATE cards SET name = 'Charizard (edited)' WHERE id = 'base1-4'")
    await conn.execute("""
        INSERT INTO sets (id, name, series_id, series_name, card_count) VALUES
            ('gone', 'Gone', 'x', 'X', 1), ('held', 'Held', 'x', 'X', 1);
        INSERT INTO cards (id, set_id, local_id, position, name, category) VALUES
            ('gone-1', 'gone', '1', 1, 'Gone', 'Pokemon'),
            ('held-1', 'held', '1', 1, 'Held', 'Trainer');
        INSERT INTO card_variants (card_id, type, position) VALUES
            ('gone-1', 'normal', 1), ('held-1', 'normal', 1), ('base1-4', 'metal', 9);
    """)
    await conn.execute(
        "INSERT INTO products (card_id, variant_id, condition, sku) SELECT card_id, id, 'NM', "
        "'HELD-1' FROM card_variants WHERE card_id = 'held-1'")

    third = await load_catalog(conn)
    assert _changes(third) == {
        "sets": (0, 0, 1, 1),  # 'gone' deleted, 'held' kept: its card is kept
        "cards": (0, 1, 1, 1),  # the name restored, 'gone-1' deleted, 'held-1' kept
        "variants": (0, 0, 2, 1),  # 'gone-1' and the metal one deleted, the sold one kept
    }
    assert await conn.fetchval("SELECT name FROM cards WHERE id = 'base1-4'") == "Charizard"
    assert await conn.fetchval("SELECT count(*) FROM cards WHERE id = 'held-1'") == 1
    assert (third.sets, third.cards, third.variants) == (200, 21_067, FULL["variants"] + 1)
    held = await conn.fetchval("SELECT id FROM card_variants WHERE card_id = 'held-1'")
    assert {k: v for k, v in (await _variant_ids(conn)).items() if v != held} == ids


async def test_sample_load(conn: asyncpg.Connection) -> None:
    # As the application's pools set connections up: json/jsonb decoded to Python values.
    await init_connection(conn)
    stages: list[str] = []
    report = await load_catalog(conn, sample=True, progress=lambda s, *_: stages.append(s))
    assert (report.sets, report.cards, report.variants) == (3, 492, SAMPLE["variants"])
    assert report.duplicate_variants_dropped == SAMPLE["entries"] - SAMPLE["variants"]
    assert report.sources == ["sets.json", "sample-cards.jsonl"]
    sets = await conn.fetch("SELECT id, card_count FROM sets ORDER BY release_date")
    assert [(r["id"], r["card_count"]) for r in sets] == [
        ("base1", 102), ("xy1", 146), ("sv10", 244)]
    assert "prune" not in stages
    attacks = await conn.fetchval("SELECT attacks FROM cards WHERE id = 'base1-4'")
    assert attacks[0]["name"] == "Fire Spin"
    assert not (await load_catalog(conn, sample=True)).changed


async def test_trigram_and_number_search(conn: asyncpg.Connection) -> None:
    await load_catalog(conn, sample=True)
    # Misspelt: the trigram index finds it.
    rows = await conn.fetch(
        "SELECT id, name, similarity(search_name, fold_search($1)) AS score FROM cards "
        "WHERE search_name % fold_search($1) ORDER BY score DESC, id LIMIT 3", "charzard")
    assert rows and rows[0]["name"] == "Charizard"
    # Accents and case do not matter.
    names = {r["name"] for r in await conn.fetch(
        "SELECT name FROM cards WHERE search_name % fold_search('POKEMON CENTER')")}
    assert "Pokémon Center" in names
    # Both trigram indexes are usable by the planner.
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for column in ("name", "search_name"):
            plan = "\n".join(r[0] for r in await conn.fetch(
                f"EXPLAIN SELECT id FROM cards WHERE {column} % 'charzard'"))
            assert f"ix_cards_{column}_trgm" in plan
    # Collector numbers as people type them: "4/102" in Base Set.
    card = await conn.fetchrow(
        "SELECT c.id, c.name FROM cards c JOIN sets s ON s.id = c.set_id "
        "WHERE c.number_key = $1 AND s.printed_total = $2", "4", 102)
    assert (card["id"], card["name"]) == ("base1-4", "Charizard")


async def test_load_without_schema_says_to_migrate(empty_database: str) -> None:
    connection = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(DatabaseError, match="cardmint db upgrade"):
            await load_catalog(connection, sample=True)
    finally:
        await connection.close()
