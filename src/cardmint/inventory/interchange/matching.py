"""Which catalog printing a vendor row means, strongest key first: a TCGplayer SKU id we
learned before, the TCGplayer product id (per variant in the catalog), set + number, set +
name, and last the name + number across every set (with the printed total, '/197', to
tell reprints apart). Set names are looked up through the vendors' series prefixes and
aliases; the printing through `vocab.printing`. The catalog is read once per import into
memory (21k cards: about 20 MB, a fraction of a second), so a file of 100k rows matches
without a query per row.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cardmint.inventory.interchange import vocab
from cardmint.inventory.interchange.layouts import VendorRow

# Vendors' set names the catalog spells otherwise (folded, see vocab.fold).
ALIASES = {
    "basesetshadowless": "base1", "shadowless": "base1",
    "scarletandviolet151": "sv03.5", "sv151": "sv03.5", "pokemon151": "sv03.5",
    "scarletandvioletbaseset": "sv01", "swordandshieldbaseset": "swsh1",
    "sunandmoonbaseset": "sm1", "smbaseset": "sm1", "sunandmoon": "sm1",
    "xybaseset": "xy1", "blackandwhitebaseset": "bw1", "diamondandpearlbaseset": "dp1",
    "expedition": "ecard1", "wotcpromo": "basep", "wizardspromos": "basep",
    "nintendopromos": "np", "dppromos": "dpp", "diamondandpearlpromos": "dpp",
    "hgsspromos": "hgssp", "heartgoldsoulsilverpromos": "hgssp",
    "bwpromos": "bwp", "blackandwhitepromos": "bwp", "xypromos": "xyp", "smpromos": "smp",
    "sunandmoonpromos": "smp", "swshpromos": "swshp", "swordandshieldpromocards": "swshp",
    "swordandshieldpromos": "swshp", "svpromos": "svp", "scarletandvioletpromocards": "svp",
    "scarletandvioletpromos": "svp", "megaevolutionpromos": "mep",
    "megaevolutionpromocards": "mep", "celebrations25thanniversary": "cel25",
    "celebrationsclassiccollection": "cel25cc", "hiddenfatesshinyvault": "sma",
    "shiningfatesshinyvault": "swsh4.5sv", "pokemongo": "swsh10.5",
    "rubyandsapphire": "ex1", "exrubyandsapphire": "ex1",
    # TCGplayer sells a set's Radiant Collection apart; the catalog numbers it RC1... in it
    "generationsradiantcollection": "g1", "legendarytreasuresradiantcollection": "bw11",
}
SHADOWLESS_SETS = {"basesetshadowless", "shadowless"}
PLAIN_SUBTYPES = (None, "unlimited")
FIRST_EDITION = "1st-edition"


@dataclass(frozen=True)
class Variant:
    id: int
    card_id: str
    type: str
    subtype: str | None
    size: str | None
    stamps: tuple[str, ...]
    foil: str | None
    product_id: int | None


@dataclass(frozen=True)
class Card:
    id: str
    set_id: str
    number_key: str
    name: str
    folded: str
    printed_total: int | None


@dataclass(frozen=True)
class Match:
    card: Card
    variant: Variant
    condition: str
    language: str
    by: str  # which key matched: sku, product id, set + number, ...
    note: str | None = None


@dataclass(frozen=True)
class NoMatch:
    reason: str
    field: str | None = None


def label(v: Variant) -> str:
    """A printing in the vendors' words, qualified when a card has several such."""
    base = {"normal": "Normal", "holo": "Holofoil", "reverse": "Reverse Holofoil"}.get(
        v.type, v.type.replace("-", " ").title())
    stamps = list(v.stamps)
    if FIRST_EDITION in stamps:
        base = f"1st Edition {base}"
        stamps.remove(FIRST_EDITION)
    elif v.subtype == "unlimited":
        base = f"Unlimited {base}"
    extra = [x for x in (None if v.subtype == "unlimited" else v.subtype, v.foil, *stamps,
                         None if v.size in (None, "standard") else v.size) if x]
    return base + (f" ({', '.join(_words(e) for e in extra)})" if extra else "")


def _words(value: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in value.split("-"))


class CatalogIndex:
    def __init__(self, sets: Sequence[Any], cards: Sequence[Any], variants: Sequence[Any],
                 skus: Sequence[Any]) -> None:
        self.set_names: dict[str, str] = {}
        self.sets: dict[str, Any] = {}
        for s in sets:
            self.sets[s["id"]] = s
            for key in (s["name"], s["id"], s["abbreviation"], s["tcg_online_code"]):
                if key:
                    self.set_names.setdefault(vocab.fold(key), s["id"])
            if s["name"].endswith("Black Star Promos"):
                stem = vocab.fold(s["name"][:-len("Black Star Promos")])
                for tail in ("promos", "promocards", "blackstarpromos"):
                    self.set_names.setdefault(stem + tail, s["id"])
            found = re.fullmatch(r"McDonald's Collection (\d{4})", s["name"])
            if found:
                self.set_names.setdefault(f"mcdonaldspromos{found.group(1)}", s["id"])
        # a set and its gallery / trainer-gallery / shiny-vault subsets: swsh9 -> swsh9tg
        self.family = {a: [a] + [b for b in self.sets if b != a and b.startswith(a)
                                 and re.match(r"[a-z]", b[len(a):])] for a in self.sets}
        for alias, set_id in ALIASES.items():
            if set_id in self.sets:
                self.set_names.setdefault(alias, set_id)
        self.cards: dict[str, Card] = {}
        self.by_number: dict[tuple[str, str], list[Card]] = defaultdict(list)
        self.by_name: dict[tuple[str, str], list[Card]] = defaultdict(list)
        self.by_name_number: dict[tuple[str, str], list[Card]] = defaultdict(list)
        for c in cards:
            card = Card(c["id"], c["set_id"], c["number_key"], c["name"],
                        vocab.fold(c["name"]), self.sets[c["set_id"]]["printed_total"])
            self.cards[card.id] = card
            self.by_number[(card.set_id, card.number_key)].append(card)
            self.by_name[(card.set_id, card.folded)].append(card)
            self.by_name_number[(card.folded, card.number_key)].append(card)
        self.variants: dict[str, list[Variant]] = defaultdict(list)
        self.by_product: dict[int, list[Variant]] = defaultdict(list)
        self.variant_by_id: dict[int, Variant] = {}
        for v in variants:
            variant = Variant(v["id"], v["card_id"], v["type"], v["subtype"], v["size"],
                              tuple(v["stamps"] or ()), v["foil"], v["tcgplayer_product_id"])
            self.variants[variant.card_id].append(variant)
            self.variant_by_id[variant.id] = variant
            if variant.product_id:
                self.by_product[variant.product_id].append(variant)
        self._set_cache: dict[tuple[str, str], str | None] = {}
        self.skus: dict[int, tuple[int, str, str]] = {
            s["sku_id"]: (s["variant_id"], s["condition"], s["language"]) for s in skus}

    @classmethod
    async def load(cls, ex: Any) -> CatalogIndex:
        return cls(
            await ex.fetch("SELECT id, name, abbreviation, tcg_online_code, printed_total "
                           "FROM sets"),
            await ex.fetch("SELECT id, set_id, number_key, name FROM cards"),
            await ex.fetch("SELECT id, card_id, type, subtype, size, stamps, foil, "
                           "tcgplayer_product_id FROM card_variants ORDER BY card_id, "
                           "position"),
            await ex.fetch("SELECT sku_id, variant_id, condition, language "
                           "FROM tcgplayer_skus"))

    # -- sets and cards ----------------------------------------------------------------------

    def set_of(self, name: str, code: str = "") -> str | None:
        key = (name, code)
        if key not in self._set_cache:
            if len(self._set_cache) > 10_000:
                self._set_cache.clear()
            self._set_cache[key] = self._set_of(name, code)
        return self._set_cache[key]

    def _set_of(self, name: str, code: str) -> str | None:
        for key in (*vocab.set_keys(name), *([vocab.fold(code)] if code else [])):
            found = self.set_names.get(key)
            if found:
                return found
        return None

    def match(self, row: VendorRow) -> Match | NoMatch:
        if row.sku is not None and row.sku in self.skus:
            variant_id, condition, language = self.skus[row.sku]
            variant = self.variant_by_id.get(variant_id)
            if variant is not None:
                return Match(self.cards[variant.card_id], variant, condition, language,
                             "TCGplayer SKU")
        shadowless = vocab.fold(row.set_name) in SHADOWLESS_SETS or any(
            k in SHADOWLESS_SETS for k in vocab.set_keys(row.set_name))
        if row.product_id is not None and row.product_id in self.by_product:
            variants = self.by_product[row.product_id]
            card = self.cards[variants[0].card_id]
            if all(v.card_id == card.id for v in variants):
                found = choose(variants, row.printing, shadowless)
                if isinstance(found, Variant):
                    return Match(card, found, row.condition, row.language,
                                 "TCGplayer product id")
        card_or_reason = self.card_of(row)
        if isinstance(card_or_reason, NoMatch):
            return card_or_reason
        card, by = card_or_reason
        found = choose(self.variants[card.id], row.printing, shadowless)
        if isinstance(found, NoMatch):
            return NoMatch(f"{card.name} ({card.id}): {found.reason}", found.field)
        note = None
        if row.printing.type and found.type != row.printing.type:
            note = f"the catalog has no {row.printing.label()} of this card; took {label(found)}"
        return Match(card, found, row.condition, row.language, by, note)

    def card_of(self, row: VendorRow) -> tuple[Card, str] | NoMatch:
        number = vocab.number_key(row.number) if row.number else None
        if row.number and number is None:
            return NoMatch(f"{row.number[:20]!r} is not a card number such as 4/102",
                           "number")
        total = vocab.number_total(row.number) if row.number else None
        folded = vocab.fold(row.name)
        set_id = self.set_of(row.set_name, row.set_code)
        mismatch: NoMatch | None = None
        if set_id is not None:
            sets = self.family[set_id]
            if number is not None:
                for s in sets:
                    cards = next((found for n in vocab.number_forms(number)
                                  if (found := self.by_number.get((s, n)))), [])
                    agreeing = [c for c in cards if names_agree(row.name, c)]
                    if len(agreeing) == 1:
                        return agreeing[0], "set + number"
                    if cards and not agreeing and mismatch is None:
                        mismatch = NoMatch(f"card {row.number} of {self.sets[s]['name']} is "
                                           f"{cards[0].name}, not {row.name!r}", "name")
            elif folded:
                named = [c for s in sets for c in self.by_name.get((s, folded), [])]
                if len(named) == 1:
                    return named[0], "set + name"
                if len(named) > 1:
                    return NoMatch(f"{len(named)} cards named {row.name!r} in "
                                   f"{self.sets[set_id]['name']} (numbers "
                                   f"{', '.join(c.number_key for c in named[:6])}): give "
                                   "the card number", "number")
        if number is not None and folded:
            cards = next((found for n in vocab.number_forms(number)
                          if (found := self.by_name_number.get((folded, n)))), [])
            if total is not None and len(cards) > 1:
                cards = [c for c in cards if c.printed_total == total] or cards
            if len(cards) == 1:
                return cards[0], "name + number"
            if len(cards) > 1 and mismatch is None:
                return NoMatch(f"{row.name} {row.number} is in {len(cards)} sets ("
                               f"{', '.join(c.set_id for c in cards[:6])}): name the set",
                               "set")
        if mismatch is not None:
            return mismatch
        if set_id is None:
            return NoMatch(f"no set {row.set_name[:60]!r} in the catalog", "set")
        if number is None and not folded:
            return NoMatch("the row names no card (no number, no name)", "name")
        what = f"card {row.number}" if number is not None else repr(row.name)
        return NoMatch(f"no {what} in {self.sets[set_id]['name']} ({set_id})", "number")


def names_agree(vendor: str, card: Card) -> bool:
    """Loosely: vendors add and drop words ('Charizard ex', 'Dark Charizard', 'Nidoran♀'),
    so one folded name in the other, or the first word shared, is agreement; an empty
    vendor name agrees with anything (the number alone decides)."""
    folded = vocab.fold(vendor)
    if not folded or folded in card.folded or card.folded in folded:
        return True
    mine, theirs = vocab.words(vendor), vocab.words(card.name)
    return bool(mine & theirs - {"ex", "v", "gx", "vmax", "vstar", "the", "of", "s"})


def _attribute_words(v: Variant) -> set[str]:
    parts = [*(s for s in v.stamps if s != FIRST_EDITION), v.foil,
             None if v.subtype in PLAIN_SUBTYPES else v.subtype,
             None if v.size in (None, "standard") else v.size]
    return {w for part in parts if part for w in part.split("-")} - vocab.PRINTING_NOISE


def _extras(v: Variant) -> int:
    return (len([s for s in v.stamps if s != FIRST_EDITION]) + (v.foil is not None)
            + (v.subtype not in PLAIN_SUBTYPES) + (v.size not in (None, "standard")))


def choose(variants: Sequence[Variant], p: vocab.Printing,
           shadowless_set: bool) -> Variant | NoMatch:
    """The one printing the words mean; among several, the plain one; else the choices."""
    pool = list(variants)
    if not pool:
        return NoMatch("the catalog lists no printing of this card", "printing")
    if "jumbo" not in p.extra:
        pool = [v for v in pool if v.size in (None, "standard")] or pool
    if p.type is None:  # nothing said: the plain printing, else the holo
        pool = ([v for v in pool if v.type == "normal"] or [v for v in pool if v.type == "holo"]
                or pool)
    else:
        typed = [v for v in pool if v.type == p.type]
        if not typed and p.type in ("normal", "holo"):
            # Vendors call a holo-only card's one printing 'Normal' and the reverse.
            typed = [v for v in pool if v.type in ("normal", "holo")]
        pool = typed
    first = bool(p.first_edition)
    pool = [v for v in pool if (FIRST_EDITION in v.stamps) == first]
    wants_shadowless = bool(p.shadowless) or shadowless_set
    if wants_shadowless:
        shadowless = [v for v in pool if (v.subtype or "").startswith("shadowless")]
        pool = [v for v in shadowless if v.subtype == "shadowless"] or shadowless
    elif any(v.subtype in PLAIN_SUBTYPES for v in pool):
        pool = [v for v in pool if not (v.subtype or "").startswith("shadowless")]
    for word in p.extra:  # a foil pattern or stamp named: keep the printings that have it
        named = [v for v in pool if word in (v.foil or "") or any(word in s for s in v.stamps)
                 or word in (v.subtype or "")]
        if named:
            pool = named
    said = set(p.extra)
    exact = [v for v in pool if _attribute_words(v) <= said]
    pool = exact or pool  # all it has was said: 'Normal (1st Movie)' is not '... Inverted'
    if len(pool) == 1:
        return pool[0]
    if pool:  # the one with the least beyond what was said: 'Holofoil' is not the staff stamp
        fewest = min(_extras(v) for v in pool)
        simplest = [v for v in pool if _extras(v) == fewest]
        if len(simplest) == 1:
            return simplest[0]
    have = "; ".join(label(v) for v in variants)
    if not pool:
        return NoMatch(f"no printing {p.label()!r} (it has: {have})", "printing")
    return NoMatch(f"printing {p.label()!r} is ambiguous (it has: {have})", "printing")
