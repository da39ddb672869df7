"""What the catalog routes answer: sets, cards (a search hit, or one card with its game
text and variants) and identification candidates, each built from the catalog's rows."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Self

from pydantic import Field, computed_field

from cardmint import printings
from cardmint.api.models.base import Listing, Schema
from cardmint.catalog.identify import Candidate as Identified

Row = dict[str, Any]


class Series(Schema):
    id: str
    name: str


class SetInfo(Schema):
    id: str
    name: str
    series: Series
    release_date: date | None
    printed_total: int | None = Field(description="The number printed on the cards (/102)")
    card_count: int = Field(description="Cards of this set in the catalog")
    abbreviation: str | None
    tcg_online_code: str | None

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls(id=row["id"], name=row["name"],
                   series=Series(id=row["series_id"], name=row["series_name"]),
                   release_date=row["release_date"], printed_total=row["printed_total"],
                   card_count=row["card_count"], abbreviation=row["abbreviation"],
                   tcg_online_code=row["tcg_online_code"])


class SetList(Listing[SetInfo]):
    pass


class OneSet(Schema):
    data: SetInfo


class CardSet(Schema):
    """The set a card belongs to, as a card shows it."""

    id: str
    name: str
    series: str = Field(description="The series id")
    release_date: date | None
    printed_total: int | None


class Legality(Schema):
    standard: bool
    expanded: bool


# Attacks, abilities, weaknesses and resistances are the catalog's JSON as loaded; their
# fields are in the order PostgreSQL's jsonb keeps keys (shorter first), as always sent.
class Attack(Schema):
    cost: list[str]
    name: str | None
    damage: str | None
    effect: str | None


class Ability(Schema):
    name: str | None
    type: str
    effect: str | None


class TypeModifier(Schema):
    """A weakness or a resistance: the energy type and its value (×2, -30)."""

    type: str
    value: str | None


class Variant(Schema):
    id: int
    type: str = Field(description="normal, reverse, holo, ...")
    subtype: str | None
    size: str | None
    stamps: list[str]
    foil: str | None
    tcgplayer_product_id: int | None
    cardmarket_id: int | None

    @computed_field(description="The printing named in full: finish, variation, edition "  # type: ignore[prop-decorator]
                    "and other stamps, size, foil")
    @property
    def name(self) -> str:
        return printings.name({"type": self.type, "subtype": self.subtype, "size": self.size,
                               "stamps": self.stamps, "foil": self.foil})


class CardSummary(Schema):
    """A card as a search lists it."""

    id: str
    name: str
    number: str = Field(description="As printed: 4, TG05, SV001")
    set_: CardSet = Field(alias="set")
    category: str
    rarity: str | None
    hp: int | None
    types: list[str]
    stage: str | None
    illustrator: str | None
    retreat: int | None
    regulation_mark: str | None
    dex_ids: list[int]
    legal: Legality

    @staticmethod
    def fields_of(row: Row) -> Row:
        return {"id": row["id"], "name": row["name"], "number": row["number"],
                "set_": {"id": row["set_id"], "name": row["set_name"],
                         "series": row["series_id"], "release_date": row["release_date"],
                         "printed_total": row["printed_total"]},
                "category": row["category"], "rarity": row["rarity"], "hp": row["hp"],
                "types": row["types"], "stage": row["stage"],
                "illustrator": row["illustrator"], "retreat": row["retreat"],
                "regulation_mark": row["regulation_mark"], "dex_ids": row["dex_ids"],
                "legal": {"standard": row["legal_standard"],
                          "expanded": row["legal_expanded"]}}

    @classmethod
    def from_row(cls, row: Row) -> Self:
        # One validation of nested plain values: building the nested models one by one
        # in Python costs a third more (measured on a page of 50 cards).
        return cls.model_validate(cls.fields_of(row))


class Card(CardSummary):
    """One card with its game text and its printings."""

    evolve_from: str | None
    trainer_type: str | None
    energy_type: str | None
    attacks: list[Attack]
    abilities: list[Ability]
    weaknesses: list[TypeModifier]
    resistances: list[TypeModifier]
    variants: list[Variant]

    @classmethod
    def from_row(cls, row: Row) -> Self:
        return cls.model_validate({
            **cls.fields_of(row), "evolve_from": row["evolve_from"],
            "trainer_type": row["trainer_type"], "energy_type": row["energy_type"],
            "attacks": row["attacks"], "abilities": row["abilities"],
            "weaknesses": row["weaknesses"], "resistances": row["resistances"],
            "variants": row["variants"]})


class CardList(Listing[CardSummary]):
    hints: list[str] = Field(default_factory=list, description=(
        'When nothing matches: each field term that alone matches nothing, with the '
        'closest values ("did you mean set:base1 (Base Set)?")'))


class OneCard(Schema):
    data: Card


class Candidate(Schema):
    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str
    confidence: float = Field(description="In [0, 1]")
    evidence: dict[str, float] = Field(
        description="What agreed and how much, e.g. nameSim, numberAgree, hpAgree")

    @classmethod
    def of(cls, c: Identified) -> Self:
        return cls(card_id=c.card_id, name=c.name, set_id=c.set_id, set_name=c.set_name,
                   number=c.number, confidence=c.confidence,
                   evidence={_camel(k): v for k, v in c.evidence.items()})


class Candidates(Schema):
    data: list[Candidate]
    count: int


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
