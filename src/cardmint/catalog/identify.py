"""Identify a card from what OCR read off it: ranked catalog candidates with a confidence.

How it works, in three steps:

1. **Read the input, forgiving OCR.** The number as printed (`4/102`, `TG05/TG30`, `SV001`,
   `GG35/GG70`) is split into the card number and the set's printed total; each side is read
   under the usual confusions (O/0, l/1/I, S/5, B/8, G/6, Z/2: letters where a prefix is
   expected, digits where the number is), which gives a few `number_key` spellings to look
   up (`tg05`, `sv001`, `4`). HP is read the same way (`12O` is 120). The set code is
   compared after folding the confusable characters on both sides, against the set's id,
   abbreviation and online code. With no name or number, the free text's first line stands
   for the name, and `n/m` or `HP n` in it for the number and HP.

2. **Gather candidates in one query**, each branch on an index: cards whose folded name is
   trigram-similar to the name (`search_name % $1`, similarity >= 0.3, GIN on
   `cards.search_name`), cards carrying one of the number spellings (btree on
   `cards.number_key`), and, without a number, the cards of the named set. The database
   scores each by trigram (word) similarity, computed once per distinct name, plus
   agreement of number, printed total, set and HP, and returns the best 40. A name too
   damaged for the trigram threshold is still found through its number.

3. **Score and calibrate.** Both names are folded again in Python, more aggressively than
   `fold_search` does (accents and case off, every confusable to one letter: 0/o, 1/l/i/|,
   5/s, 8/b, 6/g, 2/z, rn/m, vv/w; symbols and spaces dropped), and compared by edit
   distance, both whole (a dropped, doubled or misread letter costs one edit) and as a
   prefix (a truncated name). Each piece of evidence (name similarity, prefix similarity,
   exact name, number, total, set and HP agreement or disagreement, attack names or the
   illustrator seen in the free text) adds its weight to a score; the confidence is the
   softmax of the scores over the candidates plus a "none of these" option. The weights
   were fitted by maximum likelihood on OCR-noised cases generated from the catalog
   (`bench/identify.py --fit`), so the confidence reads as a probability: cards that share
   name, number and total split it between them. (It is normalised over the 40 returned
   candidates, so where more than 40 tie, as for a bare "Pikachu", it overstates each a
   little; it stays far below any acceptance threshold there.)
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from cardmint import inputs
from cardmint.db import Database
from cardmint.errors import ValidationError

DEFAULT_LIMIT = 5
MAX_LIMIT = 20
GATHER_LIMIT = 40  # rows the database returns for rescoring
NAME_LIMIT = 300  # distinct names the fuzzy-name branch may contribute
MAX_NAME, MAX_NUMBER, MAX_TEXT = 100, 32, 4000  # characters read of each input

# -- folding ------------------------------------------------------------------------------------

# Letter prefixes of card numbers in the catalog (TG05, SV001, SWSH001, H12, ...).
NUMBER_PREFIXES = ("SWSH", "HGSS", "TG", "GG", "SV", "SM", "XY", "BW", "DP", "SH", "RT", "AR",
                   "SL", "RC", "CC", "H")
TO_DIGIT = str.maketrans("ODQIL|!SBGZA", "000111158624")
TO_LETTER = str.maketrans("0152864", "OISBZGA")
NAME_FOLD = str.maketrans({"0": "o", "1": "l", "|": "l", "!": "l", "i": "l", "5": "s",
                           "8": "b", "6": "g", "2": "z"})
# For the database's trigram search: digits back to their likeliest letters.
QUERY_FOLD = str.maketrans({"0": "o", "1": "i", "|": "l", "5": "s", "8": "b", "6": "g",
                            "2": "z"})
CODE_FROM, CODE_TO = "01l|!5862", "oiiiisbgz"
CODE_FOLD = str.maketrans(CODE_FROM, CODE_TO)


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=65_536)
def fold_name(text: str) -> str:
    """A name reduced to what OCR cannot get wrong: `Pokémon` and `P0KEM0N`, `Charizard` and
    `Char1zard`, `Mr. Mime` and `MrMime` fold alike."""
    s = strip_accents(text).lower().translate(NAME_FOLD)
    s = s.replace("rn", "m").replace("vv", "w")
    return re.sub(r"[^a-z0-9]", "", s)


def name_query(text: str) -> str:
    """The name as the trigram search should see it: folded like `fold_search`, digits read
    as letters, symbols dropped (a stray `.` would split a word in two)."""
    s = strip_accents(text).lower().translate(QUERY_FOLD)
    s = re.sub(r"[^\w\s]|_", "", s)
    return " ".join(s.split())


def fold_code(text: str) -> str:
    """Set codes compared with confusables merged (`SV1`, `SVI` and `svl` alike)."""
    return re.sub(r"[^a-z0-9]", "", text.lower().translate(CODE_FOLD))


# SQL twin of fold_code for the sets table (199 rows: no index needed).
CODE_SQL = ("regexp_replace(translate(lower({}), "
            f"'{CODE_FROM}', '{CODE_TO}'), '[^a-z0-9]', '', 'g')")


@dataclass(frozen=True)
class NumberReading:
    keys: tuple[str, ...]  # number_key spellings to look up
    totals: tuple[int, ...]  # printed totals it may show
    numbers: tuple[int, ...] = ()  # the card number's value(s), for near misses


def _digits(text: str) -> int | None:
    folded = text.translate(TO_DIGIT)
    return inputs.whole(folded, maximum=9999) if len(folded) <= 4 else None


def _readings(part: str) -> list[tuple[str, int, str]]:
    """(prefix, number, suffix letter) readings of one side of a printed number."""
    out: list[tuple[str, int, str]] = []
    for prefix in (*NUMBER_PREFIXES, ""):
        head = part[:len(prefix)]
        if head.translate(TO_LETTER) != prefix:
            continue
        rest = part[len(prefix):]
        if not rest:
            continue
        n = _digits(rest)
        if n is not None:
            out.append((prefix, n, ""))
        if len(rest) > 1 and rest[-1] in "AB" and (n := _digits(rest[:-1])) is not None:
            out.append((prefix, n, rest[-1]))  # 77a, 4b
    return out


TOTAL_LIKE = re.compile(r"^[A-Z]{0,4}[0-9]{2,3}$")  # what a printed total can look like


def _splits(text: str) -> list[tuple[str, str]]:
    """(number, total) ways to cut what was read: at the slash; without one, at a space
    ("4 102"), at a character OCR makes of a slash (l, I, |, 1, 7: "80182", "JIJ28") or
    where a slash was dropped ("235217"), wherever what follows can be a printed total;
    and always the whole as the number. The totals then tell the cuts apart."""
    s = re.sub(r"[^A-Z0-9/|!\s]", "", strip_accents(text).upper().replace("\\", "/"))
    if "/" in s:
        left, _, right = s.partition("/")
        return [("".join(left.split()), "".join(right.split()))]
    parts = s.split()
    joined = "".join(parts)
    cuts = [(joined, "")]
    if len(parts) >= 2:
        cuts.append((parts[0], "".join(parts[1:])))
    slashes = "LI|!17" if inputs.is_digits(joined) else "LI|!1"
    for i, ch in enumerate(joined):
        if ch in slashes and 0 < i <= 6 and TOTAL_LIKE.match(joined[i + 1:]):
            cuts.append((joined[:i], joined[i + 1:]))
    if inputs.is_digits(joined) and 4 <= len(joined) <= 6:  # the slash lost: 235217 is 235/217
        cuts.extend((joined[:i], joined[i:]) for i in range(1, 4)
                    if TOTAL_LIKE.match(joined[i:]))
    return list(dict.fromkeys(cuts))


def parse_number(text: str | None) -> NumberReading:
    """Every plausible reading of a number as printed; empty if there is nothing to read."""
    keys: list[str] = []
    totals: set[int] = set()
    numbers: set[int] = set()
    for left, right in _splits(text or ""):
        for prefix, n, suffix in _readings(left):
            numbers.add(n)
            spellings = [str(n)] if not prefix else [f"{n}", f"{n:02d}", f"{n:03d}"]
            keys.extend(f"{prefix}{x}{suffix}".lower() for x in spellings)
        raw = re.sub(r"^0+(?=[0-9])", "", left).lower()
        if raw:
            keys.append(raw)  # exotic local ids: A, !, 77a as read
        totals.update(n for _, n, suffix in _readings(right) if not suffix)
    return NumberReading(tuple(dict.fromkeys(keys)), tuple(sorted(totals)),
                         tuple(sorted(numbers)))


def parse_hp(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value if value is None or 0 < value < 1000 else None
    n = _digits(re.sub(r"(?i)hp|[^0-9A-Z|!]", "", value.upper()))
    return n if n is not None and 0 < n < 1000 else None


TEXT_NUMBER = re.compile(r"(?<![A-Za-z0-9])([A-Z]{0,4}\d{1,3}[ab]?)\s*/\s*([A-Z]{0,4}\d{1,3})\b")
TEXT_PROMO = re.compile(r"\b((?:SWSH|HGSS|SM|XY|BW|DP|SV|TG|GG|CC)\s?\d{1,3})\b")
TEXT_HP = re.compile(r"(?i)\bHP\s*(\d{2,3})\b|\b(\d{2,3})\s*HP\b")


# -- input ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OcrInput:
    """What OCR read off one card; any part may be missing."""

    name: str | None = None
    number: str | None = None  # as printed: 4/102, TG05/TG30, SV001
    set_code: str | None = None  # TCGdex id or the printed abbreviation
    hp: int | str | None = None
    text: str | None = None  # anything else read (attacks, illustrator, ...)


@dataclass
class Reading:
    """The input, read: what the query and the scoring use."""

    name: str  # as read ('' if none)
    query: str  # for the trigram search
    key: str  # fold_name(name)
    number: NumberReading
    set_code: str | None  # folded
    hp: int | None
    text: str  # folded free text, for evidence ('' if none)


# HP read into the name line: "CharizardHP120", "Charizard HP 12O", "Charizard 120 HP".
NAME_HP = re.compile(r"(?i)^(.*?[a-z].*?)\s*(?:H\s?P\s*([0-9OIlSB]{2,3})|([0-9OIlSB]{2,3})\s*HP)$")


def split_hp(name: str) -> tuple[str, str | None]:
    """The name without an HP glued to its end, and that HP as read (or None)."""
    m = NAME_HP.match(name.strip())
    if not m or len(m.group(1).strip()) < 2:
        return name, None
    return m.group(1).strip(), m.group(2) or m.group(3)


def read(ocr: OcrInput) -> Reading:
    """The input read for the query and the scoring. Lengths are capped here as well as in
    the API (a trigram search over a page of text would be slow), and what is left is
    reduced to letters, digits and a few separators: nothing else reaches the database."""
    text = (ocr.text or "").strip()[:MAX_TEXT]
    name = (ocr.name or "").strip()[:MAX_NAME]
    if not name and text:
        name = text.splitlines()[0][:MAX_NAME]
    name, glued_hp = split_hp(name)
    if ocr.hp is None and glued_hp is not None:
        ocr = OcrInput(name=ocr.name, number=ocr.number, set_code=ocr.set_code, hp=glued_hp,
                       text=ocr.text)
    number_text: str | None = (ocr.number or "")[:MAX_NUMBER]
    if not (number_text or "").strip() and text:
        m = TEXT_NUMBER.search(text)
        promo = TEXT_PROMO.search(text) if not m else None
        number_text = f"{m.group(1)}/{m.group(2)}" if m else promo.group(1) if promo else None
    hp = parse_hp(ocr.hp)
    if hp is None and text:
        m = TEXT_HP.search(text)
        hp = int(m.group(1) or m.group(2)) if m else None
    code = fold_code(ocr.set_code[:MAX_NUMBER]) if ocr.set_code else ""
    return Reading(name=name, query=name_query(name), key=fold_name(name),
                   number=parse_number(number_text), set_code=code or None, hp=hp,
                   text=" " + " ".join(strip_accents(text).lower().split()) + " " if text
                   else "")


# -- candidates -------------------------------------------------------------------------------

# Every branch reads the few columns it needs straight from its index scan (a join back to
# `cards` by id makes the planner scan the whole table). Trigram similarity, the costly part,
# is computed once per distinct name, not once per card.
CARD_COLS = "c.id, c.name, c.local_id, c.number_key, c.set_id, c.hp, c.search_name"
GATHER_SQL = f"""
WITH target_sets AS (
    SELECT s.id FROM sets s
    WHERE $4::text IS NOT NULL
      AND $4::text IN ({CODE_SQL.format('s.id')}, {CODE_SQL.format('s.abbreviation')},
                       {CODE_SQL.format("split_part(s.abbreviation, ':', 1)")},
                       {CODE_SQL.format('s.tcg_online_code')})
), name_rows AS MATERIALIZED (
    SELECT {CARD_COLS} FROM cards c
    WHERE $1::text <> '' AND c.search_name % $1::text
), best_names AS (
    SELECT search_name, greatest(similarity(search_name, $1::text),
                                 word_similarity($1::text, search_name)) AS sim
    FROM (SELECT DISTINCT search_name FROM name_rows) AS d
    ORDER BY sim DESC LIMIT {NAME_LIMIT}
), by_number AS (
    SELECT {CARD_COLS} FROM cards c
    WHERE c.number_key = ANY($2::text[])
), number_names AS (
    SELECT search_name, CASE WHEN $1::text = '' THEN 0 ELSE
               greatest(similarity(search_name, $1::text), word_similarity($1::text, search_name))
           END AS sim
    FROM (SELECT DISTINCT search_name FROM by_number) AS d
), by_set AS (
    SELECT {CARD_COLS} FROM cards c
    WHERE cardinality($2::text[]) = 0 AND c.set_id IN (SELECT id FROM target_sets)
), found AS (
    SELECT DISTINCT ON (id) * FROM (
        SELECT r.*, n.sim FROM name_rows r JOIN best_names n USING (search_name)
        UNION ALL
        SELECT r.*, n.sim FROM by_number r JOIN number_names n USING (search_name)
        UNION ALL
        SELECT r.*, 0 FROM by_set r
    ) AS u
    ORDER BY id, sim DESC
)
SELECT f.id, f.name, f.local_id, f.number_key, f.set_id, s.name AS set_name, f.hp,
       s.printed_total, f.sim,
       f.number_key = ANY($2::text[]) AS number_hit,
       s.printed_total = ANY($3::int[]) AS total_hit,
       f.set_id IN (SELECT id FROM target_sets) AS set_hit,
       EXISTS (SELECT 1 FROM target_sets) AS set_known,
       f.hp = $5::int AS hp_hit
FROM found f JOIN sets s ON s.id = f.set_id
ORDER BY f.sim + 0.5 * (f.number_key = ANY($2::text[]))::int
         + 0.3 * coalesce(s.printed_total = ANY($3::int[]), false)::int
         + 0.5 * (f.set_id IN (SELECT id FROM target_sets))::int
         + 0.2 * coalesce(f.hp = $5::int, false)::int DESC, f.id
LIMIT {GATHER_LIMIT}
"""
# Attack names and illustrators, for the free-text evidence (only when there is text).
DETAILS_SQL = """
SELECT c.id, c.illustrator,
       ARRAY(SELECT a ->> 'name' FROM jsonb_array_elements(c.attacks) AS a) AS attacks
FROM cards c WHERE c.id = ANY($1::text[])
"""


# -- scoring ----------------------------------------------------------------------------------

FEATURES = ("name_sim", "prefix_sim", "name_exact", "number_agree", "number_disagree",
            "number_near", "total_agree", "total_disagree", "total_near", "set_agree",
            "set_disagree", "hp_agree", "hp_disagree", "text_hits")
# Fitted by `python -m bench.identify --fit` (maximum likelihood, conditional logit with a
# "none of these" option scored 0); see bench/README-identify.md.
WEIGHTS = {
    "bias": 0.005, "name_sim": 3.792, "prefix_sim": 4.123, "name_exact": 3.066,
    "number_agree": 3.369, "number_disagree": -3.367, "number_near": 1.54,
    "total_agree": 2.672, "total_disagree": -2.671, "total_near": 0.972, "set_agree": 2.163,
    "set_disagree": -2.162, "hp_agree": 2.331, "hp_disagree": -2.268, "text_hits": 2.39,
}


@lru_cache(maxsize=65_536)
def name_similarity(a: str, b: str) -> tuple[float, float]:
    """(whole, prefix) similarity of two folded names, from one edit-distance table:
    whole = 1 - distance / longer length; prefix = how well `a` matches the start of `b`
    (1 - the best distance to a prefix of b, over len(a)), for names cut short."""
    if not a or not b:
        return 0.0, 0.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    whole = 1.0 - previous[-1] / max(len(a), len(b))
    prefix = 1.0 - min(previous[1:]) / len(a) if len(a) < len(b) else whole
    return whole, max(prefix, whole)


def _agreement(known: bool, hit: bool | None) -> tuple[float, float]:
    if not known or hit is None:
        return 0.0, 0.0
    return (1.0, 0.0) if hit else (0.0, 1.0)


def features(reading: Reading, row: Any,
             details: dict[str, Any] | None = None) -> dict[str, float]:
    """The evidence one candidate row carries, as numbers for the weights above; `details`
    (attack names, illustrator) only when there is free text to look them up in."""
    whole, prefix = name_similarity(reading.key, fold_name(row["name"]))
    f = {"name_sim": whole, "prefix_sim": prefix,
         "name_exact": 1.0 if reading.key and reading.key == fold_name(row["name"]) else 0.0}
    f["number_agree"], f["number_disagree"] = _agreement(bool(reading.number.keys),
                                                         row["number_hit"])
    f["number_near"] = 1.0 if f["number_disagree"] and _near(
        reading.number.numbers, re.sub(r"[^0-9]", "", row["number_key"])) else 0.0
    f["total_agree"], f["total_disagree"] = _agreement(bool(reading.number.totals),
                                                       row["total_hit"])
    f["total_near"] = 1.0 if f["total_disagree"] and _near(
        reading.number.totals, str(row["printed_total"] or "")) else 0.0
    f["set_agree"], f["set_disagree"] = _agreement(row["set_known"], row["set_hit"])
    f["hp_agree"], f["hp_disagree"] = _agreement(reading.hp is not None and row["hp"] is not None,
                                                 row["hp_hit"])
    f["text_hits"] = _text_hits(reading.text, details) if reading.text and details else 0.0
    return f


def _near(read: tuple[int, ...], digits: str) -> bool:
    """One digit off (misread, dropped or extra): 254 for 264, 19 for 190."""
    value = digits.lstrip("0") or "0"
    if not digits or len(value) < 2:  # every one-digit number is "near" every other
        return False
    return any(name_similarity(str(n), value)[0] >= 1 - 1 / max(len(str(n)), len(value))
               for n in read)


def _text_hits(text: str, details: Any) -> float:
    """Attack names and the illustrator found in the free text (each counts once)."""
    words = [*details["attacks"], details["illustrator"]]
    hits = 0
    for word in words:
        if word and len(word) >= 4 and f" {strip_accents(word).lower()} " in text:
            hits += 1
    return float(min(hits, 3))


def score(f: dict[str, float], weights: dict[str, float] = WEIGHTS) -> float:
    return weights["bias"] + sum(weights[k] * v for k, v in f.items())


def confidences(scores: list[float]) -> list[float]:
    """Softmax over the candidates and a "none of these" option scored 0."""
    top = max([0.0, *scores])
    exps = [math.exp(s - top) for s in scores]
    total = math.exp(-top) + sum(exps)
    return [e / total for e in exps]


# -- the entry point --------------------------------------------------------------------------

@dataclass
class Candidate:
    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str  # local_id, as in the catalog
    confidence: float
    evidence: dict[str, float] = field(default_factory=dict)


async def gather(db: Database, reading: Reading, *, stale_ok: bool = True
                 ) -> list[tuple[Any, dict[str, float]]]:
    """Candidate rows with their evidence, unranked (the bench fits weights on these)."""
    if not (reading.query or reading.number.keys or reading.set_code):
        return []
    rows = await db.fetch(GATHER_SQL, reading.query, list(reading.number.keys),
                          list(reading.number.totals), reading.set_code, reading.hp,
                          stale_ok=stale_ok)
    details: dict[str, Any] = {}
    if reading.text and rows:
        found = await db.fetch(DETAILS_SQL, [r["id"] for r in rows], stale_ok=stale_ok)
        details = {d["id"]: d for d in found}
    return [(row, features(reading, row, details.get(row["id"]))) for row in rows]


# The trigram search misses a name read with too many errors for its length ("Mcwth"); then
# the catalog names nearest by trigrams are re-ranked by edit distance and searched for.
NAME_CLOSE = 0.5  # edit-distance similarity from which a name is close to a card's
CLOSEST_SQL = """
SELECT search_name FROM (SELECT DISTINCT search_name FROM cards) AS d
ORDER BY similarity(search_name, $1::text) DESC LIMIT 20
"""


async def _closest_names(db: Database, reading: Reading, stale_ok: bool) -> list[str]:
    rows = await db.fetch(CLOSEST_SQL, reading.query, stale_ok=stale_ok)
    scored = sorted(((name_similarity(reading.key, fold_name(r["search_name"]))[0],
                      r["search_name"]) for r in rows), reverse=True)
    return [name for sim, name in scored[:2] if sim >= NAME_CLOSE]


async def gather_close(db: Database, reading: Reading, *, stale_ok: bool = True
                       ) -> list[tuple[Any, dict[str, float]]]:
    """`gather`, and when no candidate's name is close to the name read, also the cards of
    the nearest catalog names: a name alone that is close to a card's always gives it."""
    found = await gather(db, reading, stale_ok=stale_ok)
    if not reading.key or any(f["name_sim"] >= NAME_CLOSE for _, f in found):
        return found
    seen = {row["id"] for row, _ in found}
    for name in await _closest_names(db, reading, stale_ok):
        for row, f in await gather(db, replace(reading, query=name), stale_ok=stale_ok):
            if row["id"] not in seen:
                seen.add(row["id"])
                found.append((row, f))
    return found


async def identify(db: Database, ocr: OcrInput, *, limit: int = DEFAULT_LIMIT,
                   stale_ok: bool = True) -> list[Candidate]:
    """Ranked candidates for what OCR read, best first, each with a confidence in [0, 1]
    and the evidence behind it (the non-zero features). `stale_ok`: a replica may
    answer (the catalog changes only on a load)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    reading = read(ocr)
    found = await gather_close(db, reading, stale_ok=stale_ok)
    if not found:
        return []
    scores = [score(f) for _, f in found]
    ranked = sorted(zip(scores, confidences(scores), found, strict=True),
                    key=lambda x: (-x[0], x[2][0]["id"]))
    return [Candidate(card_id=row["id"], name=row["name"], set_id=row["set_id"],
                      set_name=row["set_name"], number=row["local_id"],
                      confidence=round(conf, 4),
                      evidence={k: round(v, 3) for k, v in f.items() if v})
            for _, conf, (row, f) in ranked[:limit]]
