"""CardMint's intake rules, as pure functions: which variant a scan is, and why a capture
needs a person to look at it before it becomes inventory."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIDENCE_MIN = 0.85  # below this the identification is not trusted on its own
VALUE_MAX_CENTS = 10_000  # above $100 a person checks the card before it is stocked
FIRST_EDITION = "1st-edition"

# "1st Edition" is a stamp, not text, but operators and some OCR pipelines write it out.
_FIRST_EDITION_TEXT = re.compile(r"(?i)\b(1st|first)[\s\-]*ed(ition|\.)?\b|\bedition\s*1\b")


@dataclass(frozen=True)
class Reason:
    code: str  # low_confidence, high_value, first_edition, no_match, variant_unknown
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class VariantHint:
    """What the submitter knows of the printing; every given part must match."""

    type: str | None = None
    subtype: str | None = None
    foil: str | None = None
    stamps: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.type or self.subtype or self.foil or self.stamps)

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "subtype": self.subtype, "foil": self.foil,
                "stamps": list(self.stamps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> VariantHint:
        data = data or {}
        return cls(type=data.get("type"), subtype=data.get("subtype"), foil=data.get("foil"),
                    stamps=tuple(data.get("stamps") or ()))


def reads_first_edition(text: str | None) -> bool:
    return bool(text) and _FIRST_EDITION_TEXT.search(text or "") is not None


def _matches(variant: Mapping[str, Any], hint: VariantHint) -> bool:
    for key in ("type", "subtype", "foil"):
        wanted = getattr(hint, key)
        if wanted and (variant.get(key) or "").lower() != wanted.lower():
            return False
    return set(hint.stamps) <= set(variant.get("stamps") or ())


def choose_variant(variants: Sequence[Mapping[str, Any]],
                   hint: VariantHint | None = None) -> Mapping[str, Any] | None:
    """The printing a scan most likely is: the first (catalog order, `position`) that matches
    the hint; without a hint, the first unstamped one (stamped printings such as 1st edition
    or promos are the exception), else the first. None if the hint matches none."""
    ordered = sorted(variants, key=lambda v: v["position"])
    if hint is not None and not hint.empty:
        return next((v for v in ordered if _matches(v, hint)), None)
    return next((v for v in ordered if not v.get("stamps")), ordered[0] if ordered else None)


def review_reasons(*, matched: bool, confidence: float | None, price_cents: int | None,
                   stamps: Sequence[str] = (), variant_found: bool = True) -> list[Reason]:
    """Why a capture must go to review; empty when it may become inventory on its own."""
    if not matched:
        return [Reason("no_match", "no catalog card matches what was read")]
    reasons = []
    if confidence is None or confidence < CONFIDENCE_MIN:
        shown = "unknown" if confidence is None else f"{confidence:.2f}"
        reasons.append(Reason("low_confidence",
                              f"identification confidence {shown} is below {CONFIDENCE_MIN}"))
    if not variant_found:
        reasons.append(Reason("variant_unknown",
                              "no printing of the identified card matches the variant given"))
    if price_cents is not None and price_cents > VALUE_MAX_CENTS:
        reasons.append(Reason("high_value",
                              f"market value ${price_cents / 100:,.2f} is above "
                              f"${VALUE_MAX_CENTS / 100:,.0f}"))
    if FIRST_EDITION in stamps:
        reasons.append(Reason("first_edition", "a first edition is checked by a person"))
    return reasons
