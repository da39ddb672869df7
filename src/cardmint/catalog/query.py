"""The card query language: parse a query string into an AST, compile the AST into a
parameterised SQL WHERE clause over `cards c`.

In the spirit of pokemontcg.io and Scryfall:

    charizard                 a bare word: fuzzy name match (trigram, accent/case-insensitive)
    "mr. mime"                a quoted phrase: the name contains it
    name:char*                a field; `*` is a wildcard (name and illustrator: contains)
    rarity:"Rare Holo"        quoted values; rarity words in any order ("Holo Rare" too)
    set:"Base Set"            a set by id, code or name
    hp:[100 TO *] hp:>=100    ranges ([] inclusive, {} exclusive, * open) and comparisons
    -type:fire  NOT x         negation
    (a OR b) c                OR with parentheses; AND by juxtaposition (or the word AND)

Grammar (OR binds looser than AND, `-` binds tightest):

    query  := or?
    or     := and ("OR" and)*
    and    := unary ("AND"? unary)*
    unary  := ("-" | "NOT") unary | "(" or ")" | term
    term   := field ":" value | word | phrase
    value  := word | phrase | range | ("<" | "<=" | ">" | ">=" | "=") integer
    range  := ("[" | "{") bound "TO" bound ("]" | "}")    bound := integer | "*"

Errors are `ValidationError(field="q")` whose message names the character position (1-based)
and what was expected there. Everything user-typed reaches SQL as a bound parameter; the SQL
text is assembled only from the fixed fragments below.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cardmint import inputs
from cardmint.errors import ValidationError

MAX_LENGTH = 500  # characters
MAX_DEPTH = 16  # parentheses and negations, nested
MAX_TERMS = 40  # each term is a condition the database evaluates
MAX_INT = 999_999

WHITESPACE = " \t\r\n"
WORD_END = set(WHITESPACE) | set('()"')
COMPARISONS = (">=", "<=", ">", "<", "=")

# -- the AST ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """`field:value` (also a quoted bare phrase, as name:"...")."""

    field: str
    value: str
    pos: int  # 0-based offset of the term in the query


@dataclass(frozen=True)
class Fuzzy:
    """A bare word: the name is like it (trigram word similarity) or contains it."""

    word: str
    pos: int


@dataclass(frozen=True)
class Range:
    """A numeric test: bounds `low`/`high` (None: open), inclusive or not. `hp:120` is
    [120 TO 120], `hp:>100` is {100 TO *]."""

    field: str
    low: int | None
    high: int | None
    low_inclusive: bool = True
    high_inclusive: bool = True
    pos: int = 0


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Match | Fuzzy | Range | Not | And | Or


# -- fields -----------------------------------------------------------------------------------

TEXT, NUMBER = "text", "number"


@dataclass(frozen=True)
class Field:
    kind: str  # TEXT takes words and phrases; NUMBER also ranges and comparisons
    # (params, value) -> SQL for a Match; for NUMBER fields a Range compiles via `column`
    match: Callable[[Params, str], str] | None = None
    column: str | None = None  # NUMBER: an integer SQL expression over `c`
    any_of: bool = False  # NUMBER: `column` is an integer array


class Params:
    """Collects bound parameters; `add` returns the placeholder ($n) with a cast."""

    def __init__(self, first: int = 1) -> None:
        self.first = first
        self.values: list[Any] = []

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${self.first + len(self.values) - 1}::{cast}"


def fold(text: str) -> str:
    """Accents off (NFKD, combining marks dropped), as fold_search() does in SQL; the
    database then lower-cases, so both sides agree on the letters."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def like_pattern(value: str, *, contains: bool) -> str:
    """A LIKE pattern for a user value: LIKE's own metacharacters escaped, `*` as the
    wildcard; `contains` wraps it in % unless the user placed wildcards."""
    escaped = re.sub(r"([\\%_])", r"\\\1", fold(value)).replace("*", "%")
    if contains and "*" not in value:
        return f"%{escaped}%"
    return escaped


def _name(p: Params, v: str) -> str:
    return f"c.search_name LIKE fold_search({p.add(like_pattern(v, contains=True), 'text')})"


def _illustrator(p: Params, v: str) -> str:
    # fold_search() on 21k rows costs ~60 ms; on the ~400 distinct illustrators, ~1 ms.
    pattern = p.add(like_pattern(v, contains=True), "text")
    # OFFSET 0 keeps the planner from pushing the fold below the DISTINCT.
    return ("c.illustrator IN (SELECT i.illustrator FROM (SELECT DISTINCT illustrator "
            "FROM cards WHERE illustrator IS NOT NULL OFFSET 0) AS i "
            f"WHERE fold_search(i.illustrator) LIKE fold_search({pattern}))")


def _keyword(column: str) -> Callable[[Params, str], str]:
    def match(p: Params, v: str) -> str:
        return f"lower({column}) LIKE lower({p.add(like_pattern(v, contains=False), 'text')})"
    return match


# What players call the TCG's energy types after the video games' names.
TYPE_SYNONYMS = {"electric": "Lightning", "dark": "Darkness", "steel": "Metal",
                 "normal": "Colorless", "colourless": "Colorless", "ghost": "Psychic",
                 "ground": "Fighting", "rock": "Fighting", "ice": "Water", "bug": "Grass"}


def _type(p: Params, v: str) -> str:
    v = TYPE_SYNONYMS.get(fold(v).lower(), v)
    if "*" in v:
        pattern = p.add(like_pattern(v, contains=False), "text")
        return ("EXISTS (SELECT 1 FROM unnest(c.types) AS t(v) "
                f"WHERE lower(t.v) LIKE lower({pattern}))")
    # Types are capitalised single words (Fire, Lightning): containment is cheap.
    return f"c.types @> ARRAY[initcap({p.add(fold(v), 'text')})]"


def _set(p: Params, v: str) -> str:
    # an id (base1), a code (BS) or the set's whole name ("Base Set"), any case or accent
    x = p.add(like_pattern(v, contains=False), "text")
    return (f"c.set_id IN (SELECT s.id FROM sets s WHERE lower(s.id) LIKE lower({x}) "
            f"OR lower(s.abbreviation) LIKE lower({x}) "
            f"OR lower(s.tcg_online_code) LIKE lower({x}) "
            f"OR fold_search(s.name) LIKE fold_search({x}))")


# Names other catalogs use for the same rarity (pokemontcg.io says "Rare Rainbow" where
# TCGdex says "Hyper rare"); word order is forgiven separately ("Rare Holo" = "Holo Rare").
RARITY_SYNONYMS = {"rare rainbow": "hyper rare", "rare shiny": "shiny rare",
                   "rare shiny gx": "shiny rare", "rare ace": "ace spec rare",
                   "rare break": "ultra rare", "rare ultra": "ultra rare",
                   "rare secret": "secret rare"}


def terms(node: Node | None) -> list[Match]:
    """The field:value terms of a query, in order (for "did you mean")."""
    if node is None:
        return []
    if isinstance(node, Match):
        return [node]
    if isinstance(node, Not):
        return terms(node.child)
    if isinstance(node, And | Or):
        return [m for child in node.children for m in terms(child)]
    return []


def word_key(text: str) -> list[str]:
    """The words of a value, folded and sorted: "Rare Holo" and "Holo Rare" agree."""
    return sorted(fold(text).lower().split())


def _rarity(p: Params, v: str) -> str:
    if "*" in v:
        return _keyword("c.rarity")(p, v)
    wanted = " ".join(fold(v).lower().split())
    wanted = RARITY_SYNONYMS.get(wanted, wanted)
    x = p.add(word_key(wanted), "text[]")
    # ~30 distinct rarities: compare their word lists, not 21k rows' (OFFSET 0: see above)
    return ("c.rarity IN (SELECT r.rarity FROM (SELECT DISTINCT rarity FROM cards "
            "WHERE rarity IS NOT NULL OFFSET 0) AS r WHERE ARRAY(SELECT w FROM "
            "unnest(string_to_array(fold_search(r.rarity), ' ')) AS w "
            f'ORDER BY w COLLATE "C") = {x})')  # Python's sort is code point order


def _set_name(p: Params, v: str) -> str:
    x = p.add(like_pattern(v, contains=True), "text")
    return f"c.set_id IN (SELECT s.id FROM sets s WHERE fold_search(s.name) LIKE fold_search({x}))"


def _series(p: Params, v: str) -> str:
    x = p.add(like_pattern(v, contains=False), "text")
    return (f"c.set_id IN (SELECT s.id FROM sets s WHERE lower(s.series_id) LIKE lower({x}) "
            f"OR fold_search(s.series_name) LIKE fold_search({x}))")


def _number(p: Params, v: str) -> str:
    # "4/102": the number and the set's printed total.
    number, _, total = v.partition("/")
    sql = ("c.number_key = lower(regexp_replace("
           f"{p.add(number.strip(), 'text')}, '^0+(?=[0-9])', ''))")
    if total.strip():
        if not _is_int(total.strip()):
            raise ValueError("a whole number after '/'")
        sql += (" AND c.set_id IN (SELECT s.id FROM sets s WHERE s.printed_total = "
                f"{p.add(int(total), 'int')})")
    return sql


def _legal(p: Params, v: str) -> str:
    formats = {"standard": "c.legal_standard", "expanded": "c.legal_expanded"}
    if v.lower() not in formats:
        raise ValueError("standard or expanded")
    return formats[v.lower()]


NUMERIC_LOCAL_ID = "(CASE WHEN c.local_id ~ '^[0-9]{1,6}$' THEN c.local_id::int END)"

FIELDS: dict[str, Field] = {
    "name": Field(TEXT, _name),
    "set": Field(TEXT, _set),
    "set.name": Field(TEXT, _set_name),
    "series": Field(TEXT, _series),
    "number": Field(NUMBER, _number, column=NUMERIC_LOCAL_ID),
    "rarity": Field(TEXT, _rarity),
    "type": Field(TEXT, _type),
    "category": Field(TEXT, _keyword("c.category")),
    "stage": Field(TEXT, _keyword("c.stage")),
    "illustrator": Field(TEXT, _illustrator),
    "regulation": Field(TEXT, _keyword("c.regulation_mark")),
    "id": Field(TEXT, _keyword("c.id")),
    "legal": Field(TEXT, _legal),
    "hp": Field(NUMBER, column="c.hp"),
    "retreat": Field(NUMBER, column="c.retreat"),
    "dex": Field(NUMBER, column="c.dex_ids", any_of=True),
}
# pokemontcg.io's names for the same fields
ALIASES = {"types": "type", "supertype": "category", "artist": "illustrator",
           "set.id": "set", "set.series": "series", "nationalpokedexnumbers": "dex",
           "regulationmark": "regulation", "convertedretreatcost": "retreat"}


# -- parsing ----------------------------------------------------------------------------------


def _error(message: str) -> ValidationError:
    return ValidationError(message, field="q")


def _show(text: str) -> str:
    return repr(text if len(text) <= 20 else text[:20] + "…")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.terms = 0

    # -- scanning helpers
    def at(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.s[j] if j < len(self.s) else ""

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in WHITESPACE:
            self.i += 1

    def where(self, pos: int | None = None) -> str:
        pos = self.i if pos is None else pos
        return f"character {pos + 1}"

    def expected(self, what: str, pos: int | None = None) -> ValidationError:
        """"at character N: expected <what>, found <what is there>"."""
        pos = self.i if pos is None else pos
        if pos >= len(self.s):
            return _error(f"at character {pos + 1}: expected {what}, found the end of the query")
        j = pos
        while j < len(self.s) and self.s[j] not in WORD_END and self.s[j] not in "]}":
            j += 1
        there = self.s[pos:j] or self.s[pos]
        return _error(f"at character {pos + 1}: expected {what}, found {_show(there)}")

    def keyword(self, word: str) -> bool:
        """The upper-case keyword stands here as a whole word."""
        end = self.i + len(word)
        return self.s.startswith(word, self.i) and (end >= len(self.s) or self.s[end] in WORD_END)

    def read_word(self, *, peek: bool = False, stop: str = "") -> str:
        j = self.i
        while j < len(self.s) and self.s[j] not in WORD_END and self.s[j] not in stop:
            j += 1
        word = self.s[self.i:j]
        if not peek:
            self.i = j
        return word

    # -- grammar
    def parse(self) -> Node | None:
        self.skip_ws()
        if self.i >= len(self.s):
            return None
        node = self.parse_or(0)
        self.skip_ws()
        if self.i < len(self.s):  # only a stray ')' stops parse_or early
            raise _error(f"at {self.where()}: unexpected ')', there is no '(' to close")
        return node

    def parse_or(self, depth: int) -> Node:
        items = [self.parse_and(depth)]
        while True:
            self.skip_ws()
            if not self.keyword("OR"):
                break
            self.i += 2
            self.skip_ws()
            if self.i >= len(self.s) or self.at() == ")":
                raise self.expected("a term after OR")
            items.append(self.parse_and(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self, depth: int) -> Node:
        items = [self.parse_unary(depth)]
        while True:
            self.skip_ws()
            if self.i >= len(self.s) or self.at() == ")" or self.keyword("OR"):
                break
            if self.keyword("AND"):
                self.i += 3
                self.skip_ws()
                if self.i >= len(self.s) or self.at() == ")" or self.keyword("OR"):
                    raise self.expected("a term after AND")
            items.append(self.parse_unary(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_unary(self, depth: int) -> Node:
        if depth >= MAX_DEPTH:
            raise _error(f"at {self.where()}: the query nests too deeply, at most "
                         f"{MAX_DEPTH} levels of parentheses and negations")
        self.skip_ws()
        start = self.i
        ch = self.at()
        if ch == "-":
            self.i += 1
            if self.at() in ("", *WHITESPACE, ")"):
                raise self.expected("a term right after '-'")
            return Not(self.parse_unary(depth + 1))
        if self.keyword("NOT"):
            self.i += 3
            self.skip_ws()
            if self.at() in ("", ")"):
                raise self.expected("a term after NOT")
            return Not(self.parse_unary(depth + 1))
        if ch == "(":
            self.i += 1
            self.skip_ws()
            if self.at() in ("", ")"):
                raise self.expected("a term after '('")
            node = self.parse_or(depth + 1)
            self.skip_ws()
            if self.at() != ")":
                raise self.expected(f"')' to close the '(' opened at {self.where(start)}")
            self.i += 1
            return node
        if not ch or ch == ")" or self.keyword("OR") or self.keyword("AND"):
            raise self.expected("a term")
        return self.parse_term()

    def parse_term(self) -> Node:
        start = self.i
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _error(f"at {self.where(start)}: too many terms, at most {MAX_TERMS} "
                         "are allowed")
        if self.at() == '"':
            return Match("name", self.read_phrase(), start)
        word = self.read_word(peek=True)
        name, colon, _ = word.partition(":")
        if not colon:
            self.i += len(word)
            return Fuzzy(word, start) if "*" not in word else Match("name", word, start)
        if not name:
            raise self.expected("a field name before ':'")
        key = ALIASES.get(name.lower(), name.lower())
        if key not in FIELDS:
            raise _error(f"at {self.where(start)}: unknown field {_show(name)}, expected one "
                         f"of: {', '.join(FIELDS)}")
        self.i += len(name) + 1
        return self.parse_value(key)

    def parse_value(self, key: str) -> Node:
        spec = FIELDS[key]
        start = self.i
        numeric = ", ".join(k for k, f in FIELDS.items() if f.kind == NUMBER)
        ch = self.at()
        if ch in ("", *WHITESPACE, ")", "("):
            raise self.expected(f"a value after '{key}:'")
        if ch in "[{":
            if spec.kind != NUMBER:
                raise _error(f"at {self.where()}: '{key}' takes no range; ranges are for: "
                             f"{numeric}")
            return self.read_range(key, start)
        for op in COMPARISONS:
            if self.s.startswith(op, self.i):
                if spec.kind != NUMBER:
                    raise _error(f"at {self.where()}: '{key}' takes no comparison; "
                                 f"comparisons are for: {numeric}")
                self.i += len(op)
                bound = self.read_int()
                low = bound if op in (">=", ">", "=") else None
                high = bound if op in ("<=", "<", "=") else None
                return Range(key, low, high, op != ">", op != "<", start)
        value = self.read_phrase() if ch == '"' else self.read_word()
        if spec.match is None:  # a plain number field: hp:120
            if not _is_int(value):
                raise self.expected(f"a whole number (0 to {MAX_INT}) for '{key}'", start)
            return Range(key, int(value), int(value), pos=start)
        return Match(key, value, start)

    def read_phrase(self) -> str:
        start = self.i
        self.i += 1  # the opening quote
        out: list[str] = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s):
                out.append(self.s[self.i + 1])
                self.i += 2
                continue
            if ch == '"':
                self.i += 1
                phrase = "".join(out).strip()
                if not phrase:
                    raise _error(f"at {self.where(start)}: empty phrase")
                return phrase
            out.append(ch)
            self.i += 1
        raise self.expected(f"'\"' to close the quote opened at {self.where(start)}")

    def read_int(self) -> int:
        pos = self.i
        digits = self.read_word(stop="]}")
        if not _is_int(digits):
            raise self.expected(f"a whole number (0 to {MAX_INT})", pos)
        return int(digits)

    def read_bound(self) -> int | None:
        self.skip_ws()
        if self.at() == "*":
            self.i += 1
            return None
        return self.read_int()

    def read_range(self, key: str, start: int) -> Range:
        low_inc = self.at() == "["
        self.i += 1
        low = self.read_bound()
        self.skip_ws()
        if not self.keyword("TO"):
            raise self.expected("'TO' in the range")
        self.i += 2
        high = self.read_bound()
        self.skip_ws()
        if not self.at() or self.at() not in "]}":
            raise self.expected(f"']' or '}}' to close the range opened at {self.where(start)}")
        high_inc = self.at() == "]"
        self.i += 1
        return Range(key, low, high, low_inc, high_inc, start)


def _is_int(text: str) -> bool:
    return inputs.is_digits(text) and len(text) <= len(str(MAX_INT))


def _check_text(text: str) -> None:
    if len(text) > MAX_LENGTH:
        raise _error(f"the query is {len(text)} characters long, at most {MAX_LENGTH} "
                     "are allowed")
    for i, ch in enumerate(text):
        # NUL cannot travel to PostgreSQL; other controls and lone surrogates are noise.
        if ch not in WHITESPACE and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"):
            raise _error(f"at character {i + 1}: unexpected control or unassigned "
                         f"character {ch!r}")


def parse(text: str | None) -> Node | None:
    """The AST of a query; None for an empty query (everything matches)."""
    if text is None:
        return None
    _check_text(text)
    return _Parser(text).parse()


# -- compiling --------------------------------------------------------------------------------


@dataclass
class Compiled:
    where: str  # SQL boolean over `cards c` ("TRUE" for an empty query)
    params: list[Any] = field(default_factory=list)
    relevance: str | None = None  # SQL float, higher is better; None without fuzzy words


def compile_query(node: Node | None, *, first_param: int = 1) -> Compiled:
    """SQL for an AST; placeholders are numbered from `first_param`."""
    if node is None:
        return Compiled("TRUE")
    params = Params(first_param)
    ranked: list[str] = []
    where = _compile(node, params, ranked, negated=False)
    # A word found inside the name scores word similarity; a name that is the words and
    # little else scores similarity on top (Charizard before Dark Charizard).
    relevance = " + ".join(f"word_similarity({w}, c.search_name) + similarity(c.search_name, {w})"
                           for w in ranked) or None
    return Compiled(where, params.values, relevance)


def to_sql(text: str | None, *, first_param: int = 1) -> Compiled:
    """Parse and compile in one step."""
    return compile_query(parse(text), first_param=first_param)


def _compile(node: Node, p: Params, ranked: list[str], *, negated: bool) -> str:
    if isinstance(node, And):
        return "(" + " AND ".join(_compile(n, p, ranked, negated=negated)
                                  for n in node.children) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(_compile(n, p, ranked, negated=negated)
                                 for n in node.children) + ")"
    if isinstance(node, Not):
        # IS NOT TRUE: a card whose field is NULL does match "-rarity:common".
        return f"(({_compile(node.child, p, ranked, negated=not negated)}) IS NOT TRUE)"
    if isinstance(node, Fuzzy):
        word = p.add(fold(node.word), "text")
        if not negated:
            ranked.append(f"fold_search({word})")
        contains = p.add(like_pattern(node.word, contains=True), "text")
        # All three use the trigram index: `<%` (word similarity >= 0.6) finds the word in
        # a longer name, `%` (similarity >= 0.3) a misspelt name, LIKE a fragment.
        return (f"(fold_search({word}) <% c.search_name OR c.search_name % fold_search({word}) "
                f"OR c.search_name LIKE fold_search({contains}))")
    if isinstance(node, Range):
        return _range(node, p)
    match = FIELDS[node.field].match
    if match is None:  # the parser makes Match nodes only for fields with a matcher
        raise TypeError(f"no matcher for {node.field}")
    try:
        return match(p, node.value)
    except ValueError as exc:
        raise _error(f"at character {node.pos + 1}: '{node.field}' expects {exc}, "
                     f"found {_show(node.value)}") from None


def _range(node: Range, p: Params) -> str:
    spec = FIELDS[node.field]
    if spec.column is None:  # the parser makes Range nodes only for NUMBER fields
        raise TypeError(f"no column for {node.field}")
    exact = (node.low is not None and node.low == node.high
             and node.low_inclusive and node.high_inclusive)
    if spec.any_of and exact:  # containment can use the array's GIN index
        return f"{spec.column} @> ARRAY[{p.add(node.low, 'int')}]"
    parts = []
    if node.low is not None:
        parts.append(f"{{v}} {'>=' if node.low_inclusive else '>'} {p.add(node.low, 'int')}")
    if node.high is not None:
        parts.append(f"{{v}} {'<=' if node.high_inclusive else '<'} {p.add(node.high, 'int')}")
    if not parts:  # [* TO *]: the field has a value
        parts.append("{v} IS NOT NULL")
    test = " AND ".join(parts)
    if spec.any_of:
        return f"EXISTS (SELECT 1 FROM unnest({spec.column}) AS d(v) WHERE {test.format(v='d.v')})"
    return "(" + test.format(v=spec.column) + ")"
