"""Picking a card's fields out of the lines OCR read from its top and bottom bands.

A card prints its name in the largest type at the top, HP beside it (`HP 120`, `HP120`,
`120 HP`), a stage or category word above or before it; at the bottom the illustrator line
(`Illus. Ken Sugimori`), the collector number with the set's printed total (`4/102`,
`TG05/TG30`), and from 2023 on the set code and language before the number
(`PAL EN 012/193`), beside a copyright line. OCR gets these partly wrong: the HP glued to
the name (`CharizardHP120`), the slash of a number read as `1`, `l` or `|` or lost, letters
for digits. Here we only cut the lines into fields and tidy what is certainly noise; the
number is passed on as read, with its damage, because `cardmint.catalog.identify` reads
every plausible spelling of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cardmint.catalog.identify import OcrInput
from cardmint.scan.ocr import Line

DIGITS = frozenset("0123456789")

# Words printed near the name that are not part of it (the stage, the card kind).
STAGE = re.compile(r"(?i)^\s*(basic|stage\s*[12l|]|trainer|energy|item|supporter|stadium|"
                   r"tool|pok[eé]mon\s+tool|break|level[\s-]*up|restored|v[\s-]*union)"
                   r"\b[\s:.-]*")
# HP as printed or misread: `HP 120`, `HP12O`, `120 HP`, `H P 70`.
HP_DIGITS = "0-9OoIlSB"
HP = re.compile(rf"(?i)\bH\s?P\s*([{HP_DIGITS}]{{2,3}})\b|\b([{HP_DIGITS}]{{2,3}})\s*H\s?P\b"
                rf"|H\s?P([{HP_DIGITS}]{{2,3}})\b")
HP_GLUED = re.compile(rf"(?i)(?<=[a-z])H\s?P\s*([{HP_DIGITS}]{{2,3}})\s*$")
# The collector number: a slash (or what a slash is misread as) between two number-ish
# tokens, or one token with a letter prefix (promos: SWSH001, SV045).
NUMBER_SLASH = re.compile(r"(?<![A-Za-z0-9])([A-Z]{0,4}\d{1,3}[a-z]?)\s*([/|\\])\s*"
                          r"([A-Z]{0,4}\d{1,3})(?![0-9])")
NUMBER_BARE = re.compile(r"(?<![A-Za-z0-9])([A-Z]{0,4}[0-9OIl]{0,2}\d{1,5}[a-z]?)"
                         r"(?![A-Za-z0-9])")
SET_CODE = re.compile(r"\b([A-Z][A-Z0-9]{1,4})\s*(?:EN|FR|DE|IT|ES|PT)\b")
ILLUSTRATOR = re.compile(r"(?i)^\W*(?:i|l|1|\|){0,3}lus\s*[.,:]?\s*(.+)$")
COPYRIGHT = re.compile(r"(?i)[©@]|nintendo|creatures|game\s*freak|pok[eéè]m[oa]n\s*/")


@dataclass(frozen=True)
class CardText:
    """The fields read off one card; any may be missing."""

    name: str | None
    hp: str | None
    number: str | None
    set_code: str | None
    illustrator: str | None
    text: str  # every line read, top band then bottom band

    def ocr_input(self) -> OcrInput:
        return OcrInput(name=self.name, number=self.number, set_code=self.set_code,
                        hp=self.hp, text=self.text or None)

    @property
    def found(self) -> int:
        """How many of the identifying fields were read: which way up reads better."""
        return sum(x is not None for x in (self.name, self.hp, self.number))


def _clean_name(text: str) -> str:
    text = STAGE.sub("", text)
    text = re.sub(r"^[^\w]+|[^\w.'!?)-]+$", "", text)  # type symbols, stray marks at the ends
    return " ".join(text.split())


def _hp_of(line: str) -> tuple[str | None, str]:
    """The HP in a line (as read) and the line without it."""
    m = HP_GLUED.search(line) or HP.search(line)
    if not m:
        return None, line
    value = next(g for g in m.groups() if g)
    return value, (line[:m.start()] + " " + line[m.end():]).strip()


def name_and_hp(top: Sequence[Line]) -> tuple[str | None, str | None]:
    """The name (the tallest line that reads as a word, HP and stage words removed) and the
    HP, from the lines of the card's top band."""
    hp: str | None = None
    candidates: list[tuple[float, float, str]] = []
    for line in top:
        value, rest = _hp_of(line.text)
        if value and hp is None:
            hp = value
        name = _clean_name(rest)
        if sum(ch.isalpha() for ch in name) < 2 or re.fullmatch(r"(?i)evolves.*", name):
            continue
        candidates.append((line.height, -line.left, name))
    if not candidates:
        return None, hp
    candidates.sort(reverse=True)
    return candidates[0][2], hp


def number_and_code(bottom: Sequence[Line]) -> tuple[str | None, str | None]:
    """The collector number as read and the set code, from the bottom band's lines; the
    copyright line is skipped (its year is not a number)."""
    lines = [ln.text for ln in bottom if not COPYRIGHT.search(ln.text)
             and not ILLUSTRATOR.match(ln.text)]
    number = code = None
    for text in lines:
        m = NUMBER_SLASH.search(text)
        if m:
            number = f"{m.group(1)}/{m.group(3)}"
            c = SET_CODE.search(text[:m.start()])
            code = c.group(1) if c else None
            return number, code
    for text in lines:  # no slash: a token with enough digits (a slash read as a digit)
        c = SET_CODE.search(text)
        tail = text[c.end():] if c else text
        tokens = [t for t in NUMBER_BARE.findall(tail) if sum(ch in DIGITS for ch in t) >= 2]
        if tokens:
            number = max(tokens, key=len)
            code = c.group(1) if c else None
            return number, code
    return None, None


def illustrator(bottom: Sequence[Line]) -> str | None:
    for line in bottom:
        m = ILLUSTRATOR.match(line.text)
        if m and sum(ch.isalpha() for ch in m.group(1)) >= 2:
            return m.group(1).strip()
    return None


def card_text(top: Sequence[Line], bottom: Sequence[Line]) -> CardText:
    name, hp = name_and_hp(top)
    number, code = number_and_code(bottom)
    text = "\n".join(ln.text for ln in (*top, *bottom))
    return CardText(name=name, hp=hp, number=number, set_code=code,
                    illustrator=illustrator(bottom), text=text)
