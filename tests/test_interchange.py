"""Interchange with TCGplayer, Collectr and Dragon Shield (issue 16): files in each real
layout (tests/fixtures/interchange, sources in its README) import with every row matched
or reported with its reason, `sync` twice changes nothing, and exports round-trip."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from cardmint.db import Database
from cardmint.inventory.interchange import exports, importer, layouts, vocab
from cardmint.inventory.interchange.matching import CatalogIndex
from cardmint.inventory.items import Filters

FIXTURES = Path(__file__).parent / "fixtures" / "interchange"


@pytest.fixture(scope="module")
async def index(catalog: Database) -> CatalogIndex:
    return await CatalogIndex.load(catalog)


def reader(name_or_text: str, location: str | None, fmt: str | None = None) -> layouts.Reader:
    text = (FIXTURES / name_or_text).read_text(encoding="utf-8-sig") \
        if name_or_text.endswith(".csv") else name_or_text
    return layouts.Reader(io.StringIO(text, newline=""), fmt, location)


async def run(db: Database, source: str, location: str, *, mode: str = "add",
              dry_run: bool = False, prune: bool = False,
              index: CatalogIndex | None = None, fmt: str | None = None
              ) -> importer.ImportReport:
    async with db.transaction() as tx:
        return await importer.run(tx, reader(source, location, fmt), mode=mode,
                                  actor="test", dry_run=dry_run, prune=prune,
                                  scope_location=location, index=index)


def by_line(report: importer.ImportReport) -> dict[int, importer.RowResult]:
    return {r.line: r for r in report.results}


async def counts(db: Database, location: str) -> dict[tuple[str, str, str], int]:
    rows = await db.fetch(
        "SELECT p.card_id, v.id, p.condition, coalesce(i.grading_company, '') AS g,"
        " count(*) AS n FROM inventory_items i JOIN products p ON p.id = i.product_id"
        " JOIN card_variants v ON v.id = p.variant_id WHERE i.location = $1"
        " AND i.status = 'IN_STOCK' GROUP BY 1, 2, 3, 4", location)
    return {(r["card_id"], str(r["id"]), r["condition"] + r["g"]): r["n"] for r in rows}


def loc() -> str:
    return f"ix-{uuid.uuid4().hex[:10]}"


async def test_tcgplayer_pricing_export_matches_or_says_why(catalog: Database) -> None:
    where = loc()
    report = await run(catalog, "tcgplayer-pricing.csv", where)
    rows = by_line(report)
    assert report.format == "tcgplayer" and report.rows == 20
    assert {line: r.card_id for line, r in rows.items() if r.status == "matched"} == {
        2: "sv03-223", 3: "swsh7-215", 4: "sv03.5-001", 5: "sv03.5-001", 6: "base1-4",
        7: "base1-4", 8: "base1-4", 9: "base1-58", 10: "base2-5", 11: "base2-6",
        12: "swshp-SWSH061", 13: "swsh9tg-TG05", 14: "sma-SV49", 15: "ecard2-2",
        16: "swsh12.5gg-GG70", 21: "base1-8"}
    assert rows[6].printing == "1st Edition Holofoil (Shadowless)"
    assert rows[7].printing == "Holofoil (Shadowless)"
    assert rows[8].printing == "Unlimited Holofoil" and rows[8].condition == "LP"
    assert rows[4].printing == "Reverse Holofoil" and rows[5].printing == "Normal"
    assert rows[10].printing == "1st Edition Holofoil"
    assert "Japanese" in (rows[17].reason or "") and rows[17].status == "skipped"
    assert "sealed" in (rows[18].reason or "")
    assert rows[19].status == "unmatched" and "SV99" in (rows[19].reason or "")
    assert rows[20].status == "error" and rows[20].field == "Condition"
    # Bulbasaur reverse: Add to Quantity (1) is what `add` adds; Arceus has 0 and 0
    assert rows[4].quantity == 1 and report.items_added == 24
    learned = await catalog.fetchval(
        "SELECT count(*) FROM tcgplayer_skus WHERE sku_id BETWEEN 5100001 AND 5100021")
    assert learned == 16  # one per matched row (this file or test_csv's taught them)
    # the SKU learned now matches first, whatever the other columns say
    again = await run(catalog, "tcgplayer-pricing.csv", where, dry_run=True)
    assert by_line(again)[2].matched_by == "TCGplayer SKU"
    assert again.items_added == 24 and await counts(catalog, where) == await counts(
        catalog, where)


@pytest.mark.parametrize("name, matched, skipped, problems", [
    ("tcgplayer-pricing-store.csv", 4, 0, 0),
    ("tcgplayer-app.csv", 5, 2, 0),
    ("tcgplayer-app-short.csv", 3, 0, 0),
    ("collectr.csv", 10, 4, 3),
    ("dragonshield.csv", 6, 1, 1),
])
async def test_every_layout_is_read_by_its_header(catalog: Database, index: CatalogIndex,
                                                  name: str, matched: int, skipped: int,
                                                  problems: int) -> None:
    report = await run(catalog, name, loc(), dry_run=True, index=index)
    unexplained = [r for r in report.results if r.status != "matched" and not r.reason]
    assert unexplained == []
    assert (report.matched, report.skipped, report.problems) == (matched, skipped, problems), \
        [(r.line, r.status, r.reason) for r in report.results if r.status != "matched"]


class Rollback(Exception):
    pass


async def test_collectr_grades_costs_and_locations(catalog: Database, index: CatalogIndex
                                                   ) -> None:
    report = await run(catalog, "collectr.csv", loc(), index=index, dry_run=True)
    rows = by_line(report)
    assert rows[4].card_id == "swsh7-215"
    assert rows[6].printing == "1st Edition Holofoil (Shadowless)"
    assert "watchlist" in (rows[12].reason or "") and "sealed" in (rows[13].reason or "")
    assert "Japanese" in (rows[14].reason or "") and "Pokemon" in (rows[15].reason or "")
    assert rows[17].field == "Grade" and rows[18].field == "Average Cost Paid"
    # without --location the portfolio is the location; costs keep their 4 decimals
    with pytest.raises(Rollback):
        async with catalog.transaction() as tx:
            done = await importer.run(tx, reader("collectr.csv", None), mode="add",
                                      actor="test", index=index)
            assert done.items_added == 13
            slab = await tx.fetchrow(
                "SELECT i.location, i.acquisition_cost, i.acquisition_cost_cents, i.grade"
                " FROM inventory_items i JOIN products p ON p.id = i.product_id"
                " WHERE p.card_id = 'swsh7-215' AND i.grading_company = 'PSA'"
                " ORDER BY i.id DESC LIMIT 1")
            assert slab is not None and slab["acquisition_cost"] == Decimal("352.0680")
            assert slab["acquisition_cost_cents"] == 35207 and slab["location"] == "Slabs"
            assert slab["grade"] == 10
            raise Rollback


async def test_sync_twice_changes_nothing_and_prunes_only_when_asked(catalog: Database,
                                                                     index: CatalogIndex
                                                                     ) -> None:
    where = loc()
    first = await run(catalog, "dragonshield.csv", where, mode="sync", index=index)
    held = await counts(catalog, where)
    assert first.items_added == 9 and sum(held.values()) == 9
    second = await run(catalog, "dragonshield.csv", where, mode="sync", index=index)
    assert (second.items_added, second.items_removed, second.items_unchanged) == (0, 0, 9)
    assert await counts(catalog, where) == held
    assert {r.action for r in second.results if r.status == "matched"} == {
        "unchanged (1)", "unchanged (2)", "unchanged (3)"}
    # fewer Bulbasaurs, no Pikachu promo: the count goes down, the promo is only reported
    text = (FIXTURES / "dragonshield.csv").read_text(encoding="utf-8-sig")
    lines = [x for x in text.splitlines() if not x.startswith("Promos,")]
    lines = [x.replace("Vintage,3,0,Bulbasaur", "Vintage,1,0,Bulbasaur") for x in lines]
    smaller = "\r\n".join(lines) + "\r\n"
    preview = await run(catalog, smaller, where, mode="sync", dry_run=True, index=index)
    assert preview.items_removed == 2 and preview.missing_items == 1
    assert await counts(catalog, where) == held
    third = await run(catalog, smaller, where, mode="sync", index=index)
    assert third.items_removed == 2 and third.missing_items == 1
    assert third.missing[0].card_id == "basep-1"
    assert sum((await counts(catalog, where)).values()) == 7
    pruned = await run(catalog, smaller, where, mode="sync", prune=True, index=index)
    assert pruned.items_removed == 1 and sum((await counts(catalog, where)).values()) == 6
    ledger = await catalog.fetchval(
        "SELECT count(*) FROM inventory_ledger WHERE event = 'removed' AND from_location = $1",
        where)
    assert ledger == 3


@pytest.mark.parametrize("fmt", exports.EXPORT_FORMATS)
async def test_exports_round_trip(catalog: Database, index: CatalogIndex, fmt: str) -> None:
    a, b = loc(), loc()
    await run(catalog, "tcgplayer-pricing.csv", a, index=index)
    if fmt == "collectr":
        await run(catalog, "collectr.csv", a, index=index)
    text = "".join(await exports.export(catalog, fmt, Filters(location=a)))
    got = list(csv.reader(io.StringIO(text)))
    if fmt == "dragonshield":
        assert got[0] == ["sep=,"] and got[1] == list(layouts.DRAGON_SHIELD)
    elif fmt == "collectr":
        assert got[0][11].startswith("Market Price (As of 20")
    else:
        assert got[0] == list(layouts.TCGPLAYER)
        charizard = next(r for r in got if r[3] == "Charizard ex" and r[5] == "223/197")
        assert charizard[0] == "5100001" and charizard[13] == "2" and charizard[14] == "74.99"
    report = await run(catalog, text.replace(a, b), b, index=index)
    assert report.problems == 0 and report.skipped == 0
    assert await counts(catalog, b) == await counts(catalog, a)
    again = "".join(await exports.export(catalog, fmt, Filters(location=b)))
    assert again == text.replace(a, b)
    if fmt == "collectr":
        assert "352.0680" in again


def test_vocabulary() -> None:
    assert vocab.split_condition("Near Mint 1st Edition Holofoil") == (
        "NM", "en", "1st Edition Holofoil")
    assert vocab.split_condition("Lightly Played Reverse Holofoil - Japanese") == (
        "LP", "ja", "Reverse Holofoil")
    assert vocab.condition_code("NearMint") == "NM" and vocab.condition_code("Poor") == "DMG"
    assert vocab.printing("Near Mint Unlimited Holofoil".split(" ", 2)[2]).unlimited
    p = vocab.printing("1st Edition")
    assert p.first_edition and p.type is None
    assert vocab.product_name("Charizard ex - 223/197") == vocab.ProductName(
        "Charizard ex", "223/197", ())
    assert vocab.product_name("Umbreon VMAX (Alternate Art Secret)").qualifiers == (
        "Alternate Art Secret",)
    assert vocab.product_name("Kangaskhan (5)").number == "5"
    assert vocab.set_keys("SWSH07: Evolving Skies")[1] == "evolvingskies"
    assert "guardiansrising" in vocab.set_keys("SM - Guardians Rising")
    assert "dragonfrontiers" in vocab.set_keys("EX Dragon Frontiers")
    g = vocab.grade("BGS 10 Black Label", "Grade")
    assert (g.company, g.grade, g.note) == ("BGS", Decimal(10), "Black Label")
    assert vocab.number_key("TG05/TG30") == "tg05" and vocab.number_key("004/102") == "4"


def test_money_keeps_four_decimals_and_refuses_the_rest() -> None:
    from cardmint import inputs
    from cardmint.errors import ValidationError

    big = 10**12
    assert inputs.money("352.0680", "c", maximum=big) == Decimal("352.0680")
    assert inputs.money("$1,234.5", "c", maximum=big) == Decimal("1234.5")
    assert inputs.money(" ", "c", maximum=big) is None
    for bad in ("1.23456", "١٢", "1e3", "-1", "12.", "9" * 30):
        with pytest.raises(ValidationError):
            inputs.money(bad, "c", maximum=big)


def test_unknown_header_names_the_layouts() -> None:
    with pytest.raises(Exception) as info:
        reader("Name,Qty\nPineco,1\n", None)
    assert "TCGplayer seller pricing export" in str(info.value)
    assert reader(exports.template("collectr"), None).format == "collectr"
    assert reader(exports.template("dragonshield"), None).format == "dragonshield"
    assert reader(exports.template("tcgplayer-app"), None).format == "tcgplayer-app"


async def test_other_shapes_of_the_same_layouts(catalog: Database, index: CatalogIndex
                                                ) -> None:
    """A TCGplayer export with Product ID and Printing columns; Dragon Shield from a
    European spreadsheet (semicolons, decimal commas, no sep line)."""
    tcg = ("Product ID,TCGplayer Id,Product Line,Set Name,Product Name,Number,Printing,"
           "Rarity,Condition,TCG Market Price,Total Quantity\n"
           '107044,2999078,Pokemon,"Base Set (Shadowless)",Diglett,047/102,Foil,Common,'
           "Lightly Played,0.73,2\n")
    tcg += ('0,5500001,Pokemon,"SV: Prismatic Evolutions",Eevee (Master Ball Pattern),074/131,'
            ",Common,Near Mint Reverse Holofoil,0.50,1\n")
    report = await run(catalog, tcg, loc(), dry_run=True, index=index)
    assert report.results[1].printing == "Reverse Holofoil (Masterball)", report.results[1]
    row = report.results[0]
    assert (row.card_id, row.printing, row.matched_by) == (
        "base1-47", "Normal (Shadowless)", "TCGplayer product id"), row
    ds = ("Folder Name;Quantity;Card Name;Set Name;Card Number;Condition;Printing;Language;"
          "Price Bought\nBinder;3;Charizard;Base Set;4;Excellent;Holofoil;English;1,5\n")
    report = await run(catalog, ds, loc(), dry_run=True, index=index)
    assert report.format == "dragonshield" and report.results[0].card_id == "base1-4"
    assert report.results[0].printing == "Unlimited Holofoil"


# TCGplayer's own names of Pokémon sets, as its seller pricing export writes them in `Set
# Name` (series prefixes, "SV:" for the special sets, galleries and shiny vaults apart,
# promo lines), mapped to the catalog's set ids. Names outside the catalog are None.
TCGPLAYER_SET_NAMES = {
    "SV01: Scarlet & Violet Base Set": "sv01", "SV02: Paldea Evolved": "sv02",
    "SV03: Obsidian Flames": "sv03", "SV: Scarlet & Violet 151": "sv03.5",
    "SV04: Paradox Rift": "sv04", "SV: Paldean Fates": "sv04.5",
    "SV05: Temporal Forces": "sv05", "SV06: Twilight Masquerade": "sv06",
    "SV: Shrouded Fable": "sv06.5", "SV07: Stellar Crown": "sv07",
    "SV08: Surging Sparks": "sv08", "SV: Prismatic Evolutions": "sv08.5",
    "SV09: Journey Together": "sv09", "SV10: Destined Rivals": "sv10",
    "SV: Black Bolt": "sv10.5b", "SV: White Flare": "sv10.5w", "ME01: Mega Evolution": "me01",
    "ME02: Phantasmal Flames": "me02", "SWSH01: Sword & Shield Base Set": "swsh1",
    "SWSH03: Darkness Ablaze": "swsh3", "Champion's Path": "swsh3.5",
    "Shining Fates: Shiny Vault": "swsh4.5sv", "SWSH07: Evolving Skies": "swsh7",
    "Celebrations: Classic Collection": "cel25cc",
    "SWSH09: Brilliant Stars Trainer Gallery": "swsh9tg", "Pokemon GO": "swsh10.5",
    "Crown Zenith: Galarian Gallery": "swsh12.5gg", "SM Base Set": "sm1",
    "SM - Guardians Rising": "sm2", "Hidden Fates": "sm115", "Hidden Fates: Shiny Vault": "sma",
    "XY - Evolutions": "xy12", "Generations: Radiant Collection": "g1",
    "Legendary Treasures: Radiant Collection": "bw11", "Base Set": "base1",
    "Base Set (Shadowless)": "base1", "Base Set 2": "base4", "Team Rocket": "base5",
    "Gym Challenge": "gym2", "Neo Destiny": "neo4", "Legendary Collection": "lc",
    "Expedition Base Set": "ecard1", "Southern Islands": "si1", "WoTC Promo": "basep",
    "Nintendo Promos": "np", "SWSH: Sword & Shield Promo Cards": "swshp",
    "SV: Scarlet & Violet Promo Cards": "svp", "Black and White Promos": "bwp",
    "McDonald's Promos 2022": "2022swsh", "Pop Series 5": "pop5", "Shining Legends": "sm3.5",
    "Detective Pikachu": "det1", "Kalos Starter Set": "xy0", "EX Unseen Forces": "ex10",
    "Team Magma vs Team Aqua": "ex4", "DP Black Star Promos": "dpp",
    "HeartGold SoulSilver": "hgss1", "BW - Boundaries Crossed": "bw7", "Best of Game": "bog",
    "Miscellaneous Cards & Products": None, "Prize Pack Series Cards": None,
}


def test_tcgplayer_set_names_resolve_to_the_catalogs_sets(index: CatalogIndex) -> None:
    found = {name: index.set_of(name) for name in TCGPLAYER_SET_NAMES}
    assert found == TCGPLAYER_SET_NAMES
