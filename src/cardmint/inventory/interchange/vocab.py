"""The vendors' words for conditions, printings, grades, set names and product names, and
what each means in the catalog's terms. Pure functions: no database."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from cardmint import inputs
from cardmint.errors import ValidationError
from cardmint.inventory.fields import GRADERS

# Condition words, folded (lower case, no spaces, hyphens or underscores), of every vendor:
# TCGplayer ("Near Mint"), Collectr (the same), Dragon Shield ("NearMint", "LightPlayed",
# the Cardmarket scale Mint/Excellent/Good/Played/Poor), and the usual abbreviations.
CONDITIONS = {
    "mint": "NM", "nearmint": "NM", "nm": "NM", "nearmintmint": "NM", "nm/m": "NM",
    "lightlyplayed": "LP", "lightplayed": "LP", "lp": "LP", "excellent": "LP", "ex": "LP",
    "moderatelyplayed": "MP", "mp": "MP", "good": "MP",
    "heavilyplayed": "HP", "hp": "HP", "played": "HP",
    "damaged": "DMG", "dmg": "DMG", "poor": "DMG",
}
CONDITION_NAMES = {"NM": "Near Mint", "LP": "Lightly Played", "MP": "Moderately Played",
                   "HP": "Heavily Played", "DMG": "Damaged"}
# Dragon Shield's own words, for its export (read back through CONDITIONS).
DRAGON_SHIELD_CONDITIONS = {"NM": "NearMint", "LP": "LightPlayed", "MP": "Good",
                            "HP": "Played", "DMG": "Poor"}
LANGUAGES = {"english": "en", "japanese": "ja", "french": "fr", "german": "de",
             "spanish": "es", "italian": "it", "portuguese": "pt", "korean": "ko",
             "chinese (s)": "zh-cn", "chinese (t)": "zh-tw", "chinese": "zh-cn",
             "russian": "ru", "dutch": "nl", "polish": "pl", "thai": "th",
             "indonesian": "id"}
LANGUAGE_NAMES = {"en": "English", "ja": "Japanese", "fr": "French", "de": "German",
                  "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ko": "Korean",
                  "zh-cn": "Chinese (S)", "zh-tw": "Chinese (T)", "ru": "Russian",
                  "nl": "Dutch", "pl": "Polish", "th": "Thai", "id": "Indonesian"}
# Sealed products: a name with one of these words and no card number.
SEALED = re.compile(r"\b(booster|box|elite trainer|etb|collection|tin|bundle|blister|"
                    r"pack|deck|case|display|premium|binder|sleeves|build & battle|kit)\b",
                    re.IGNORECASE)
SERIES_PREFIX = re.compile(r"^[A-Z][A-Za-z]{0,5}[0-9]{0,3}(?:\.[0-9])?[a-z]?:\s+")
OLD_PREFIX = re.compile(r"^(?:(?:SM|XY|BW|DP|HGSS|SWSH|SV|ME|EX|POP)\s+-\s+|EX\s+)")
TRAILING_NUMBER = re.compile(r"\s+-\s+([A-Za-z]{0,4}[0-9]+[a-z]?(?:/[A-Za-z]{0,4}[0-9]+)?)\s*$")
PARENTHETICAL = re.compile(r"\s*\(([^()]*)\)\s*$")


@functools.lru_cache(maxsize=65_536)  # names repeat down a file: fold each once
def fold(text: str) -> str:
    """Compare-ready: no accents, lower case, '&' as 'and', only letters and digits."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("&", " and ").replace("♀", " f").replace("♂", " m")
    return re.sub(r"[^a-z0-9]+", "", text)


def words(text: str) -> set[str]:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return set(re.findall(r"[a-z0-9]+", text))


def condition_code(value: str) -> str | None:
    key = re.sub(r"[\s_\-]+", "", value.strip().lower())
    return CONDITIONS.get(key)


def language_code(value: str) -> str | None:
    raw = value.strip().lower()
    if not raw:
        return "en"
    if raw in LANGUAGES:
        return LANGUAGES[raw]
    if re.fullmatch(r"[a-z]{2}(-[a-z]{2,4})?", raw):
        return raw
    return None


@dataclass(frozen=True)
class Printing:
    """What a vendor's printing words say, in the catalog's terms. None: not said."""

    type: str | None = None  # normal, holo, reverse
    first_edition: bool | None = None
    shadowless: bool | None = None
    unlimited: bool = False
    extra: tuple[str, ...] = ()  # other words (a foil pattern, a stamp), lower case

    def label(self) -> str:
        parts = []
        if self.first_edition:
            parts.append("1st Edition")
        elif self.unlimited:
            parts.append("Unlimited")
        parts.append({"holo": "Holofoil", "reverse": "Reverse Holofoil",
                      "normal": "Normal", None: ""}[self.type])
        return " ".join(p for p in parts if p) or "Normal"


PRINTING_WORDS = (
    ("reverse holofoil", "reverse"), ("reverse holo", "reverse"), ("reverse foil", "reverse"),
    ("reverse", "reverse"), ("holofoil", "holo"), ("holo", "holo"), ("foil", "holo"),
    ("normal", "normal"), ("non-holo", "normal"), ("nonholo", "normal"),
    ("non holo", "normal"), ("regular", "normal"),
)


PRINTING_NOISE = frozenset({"edition", "holofoil", "holo", "foil", "reverse", "normal",
                            "1st", "unlimited", "non", "and", "-", "unopened"})


@functools.lru_cache(maxsize=4_096)
def printing(text: str) -> Printing:
    """'1st Edition Holofoil', 'Unlimited', 'Reverse Holofoil', 'Foil', '' ..."""
    rest = " " + re.sub(r"[\s,()]+", " ", text.strip().lower()) + " "
    first = None
    rest = rest.replace(" 1st edition error ", " error ")  # a stamp, not the edition
    for word in (" 1st edition ", " 1st ed ", " first edition ", " 1st ed. "):
        if word in rest:
            first, rest = True, rest.replace(word, " ")
    unlimited = " unlimited " in rest
    rest = rest.replace(" unlimited ", " ")
    if unlimited:
        first = False
    shadowless = True if " shadowless " in rest else None
    rest = rest.replace(" shadowless ", " ")
    kind = None
    for phrase, value in PRINTING_WORDS:
        if f" {phrase} " in rest:
            kind = value
            break
    for phrase, _ in PRINTING_WORDS:
        rest = rest.replace(f" {phrase} ", " ")
    extra = tuple(w for w in rest.split() if w not in PRINTING_NOISE)
    return Printing(kind, first, shadowless, unlimited, extra)


@functools.lru_cache(maxsize=4_096)
def split_condition(value: str) -> tuple[str | None, str | None, str]:
    """TCGplayer's Condition column: '<condition>[ <printing>][ - <language>]' as
    (condition code, language code, printing words); None where unreadable."""
    text, language = value.strip(), "en"
    head, sep, tail = text.rpartition(" - ")
    if sep:
        language = language_code(tail) or ""
        text = head.strip()
    lowered = text.lower()
    for name in sorted(CONDITIONS, key=len, reverse=True):
        for spelled in {CONDITION_NAMES.get(CONDITIONS[name], ""), name}:
            if spelled and (lowered == spelled.lower()
                            or lowered.startswith(spelled.lower() + " ")):
                return CONDITIONS[name], language or None, text[len(spelled):].strip()
    return None, language or None, text


@dataclass(frozen=True)
class Grade:
    company: str | None
    grade: Decimal | None
    note: str | None = None  # what the grade said beyond company and number


def grade(value: str, column: str) -> Grade:
    """'Ungraded', 'PSA 10', 'CGC 9.5', 'BGS 10 Black Label', 'PSA 10.0 GEM - MT'."""
    raw = value.strip()
    if not raw or raw.lower() in ("ungraded", "raw", "none", "no"):
        return Grade(None, None)
    found = re.fullmatch(r"([A-Za-z]+)\s*([0-9]{1,2}(?:\.[05]0?)?)\s*(.*)", raw, re.ASCII)
    if found is None:
        raise ValidationError(f"{raw[:30]!r} is not a grade such as PSA 10 or CGC 9.5",
                              field=column)
    company = found.group(1).upper()
    if company not in GRADERS:
        raise ValidationError(f"{company} graded cards are not held here (graders: "
                              f"{', '.join(GRADERS)})", field=column)
    number = inputs.decimal(found.group(2), column, "is not a grade such as PSA 10")
    if not 1 <= number <= 10 or number * 2 % 1 != 0:
        raise ValidationError(f"{raw[:30]!r}: grades are 1 to 10 in steps of 0.5",
                              field=column)
    return Grade(company, Decimal(int(number)) if number % 1 == 0 else number,
                 found.group(3).strip(" -") or None)


@dataclass(frozen=True)
class ProductName:
    name: str
    number: str | None  # from ' - 223/197' or '(5)'
    qualifiers: tuple[str, ...]  # other parentheticals, e.g. 'Alternate Art Secret'


def product_name(value: str) -> ProductName:
    """'Charizard ex - 223/197', 'Umbreon VMAX (Alternate Art Secret)', 'Kangaskhan (5)'."""
    name, number = value.strip(), None
    qualifiers: list[str] = []
    found = TRAILING_NUMBER.search(name)
    if found:
        number, name = found.group(1), name[:found.start()].strip()
    while (found := PARENTHETICAL.search(name)) is not None and found.start() > 0:
        inner = found.group(1).strip()
        if re.fullmatch(r"[A-Za-z]{0,4}[0-9]+[a-z]?(/[A-Za-z]{0,4}[0-9]+)?", inner) \
                and number is None:
            number = inner
        else:
            qualifiers.insert(0, inner)
        name = name[:found.start()].strip()
    return ProductName(name, number, tuple(qualifiers))


@functools.lru_cache(maxsize=4_096)
def set_keys(name: str) -> tuple[str, ...]:
    """Folded forms to look a vendor's set name up by, most exact first: as given, without
    a series prefix ('SV03: ', 'SWSH07: ', 'SV: '), and without a trailing 'Base Set'."""
    keys = [fold(name)]
    stripped = SERIES_PREFIX.sub("", name.strip())
    keys.append(fold(stripped))
    for tail in (" Base Set", " Set"):
        if stripped.endswith(tail):
            keys.append(fold(stripped[:-len(tail)]))
    if ": " in stripped:  # 'Crown Zenith: Galarian Gallery' -> both halves joined
        keys.append(fold(stripped.replace(": ", " ")))
    # older series prefixes: 'SM - Guardians Rising', 'XY - Flashfire', 'EX Dragon Frontiers'
    dashed = OLD_PREFIX.sub("", stripped)
    if dashed != stripped:
        keys.append(fold(dashed))
    return tuple(dict.fromkeys(k for k in keys if k))


def number_key(value: str) -> str | None:
    """As the catalog's number_key: '004/102' -> '4', 'TG05/TG30' -> 'tg05', '#25' -> '25'."""
    text = value.strip().lstrip("#").split("/")[0].strip()
    text = re.sub(r"^0+(?=[0-9])", "", text).lower()
    if text == "?":  # Unown ?: the catalog keeps the file name's escape
        text = "%3f"
    return text if text and len(text) <= 16 and re.fullmatch(r"[^\s/]+", text) else None


def number_forms(key: str) -> list[str]:
    """A number key and its other spellings: 'sv49' and 'sv049', 'swsh61' and 'swsh061'
    (vendors and the catalog pad a prefixed number's digits differently)."""
    found = re.fullmatch(r"([a-z]+)0*([0-9]+)([a-z]?)", key)
    if found is None:
        return [key]
    prefix, digits, tail = found.groups()
    return list(dict.fromkeys([key, f"{prefix}{digits}{tail}", f"{prefix}{digits:0>2}{tail}",
                               f"{prefix}{digits:0>3}{tail}"]))


def number_total(value: str) -> int | None:
    found = re.fullmatch(r"\s*[A-Za-z]*[0-9]+[a-z]?\s*/\s*([0-9]{1,4})\s*", value, re.ASCII)
    return int(found.group(1)) if found else None


def looks_sealed(name: str, number: str) -> bool:
    return not number.strip() and SEALED.search(name) is not None
