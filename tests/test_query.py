"""The query language, pure: parsing to an AST, compiling to parameterised SQL, and the
errors that say where a query went wrong."""

from __future__ import annotations

import random
import re

import pytest

from cardmint.catalog.query import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_TERMS,
    And,
    Fuzzy,
    Match,
    Not,
    Or,
    Range,
    compile_query,
    like_pattern,
    parse,
    to_sql,
)
from cardmint.errors import ValidationError

PARSED = [
    ("", None),
    ("   ", None),
    ("charizard", Fuzzy("charizard", 0)),
    ("name:charizard", Match("name", "charizard", 5)),
    ("NAME:charizard", Match("name", "charizard", 5)),
    ('rarity:"Rare Holo"', Match("rarity", "Rare Holo", 7)),
    ('"mr. mime"', Match("name", "mr. mime", 0)),
    ("char*", Match("name", "char*", 0)),
    ("hp:120", Range("hp", 120, 120, pos=3)),
    ("hp:[100 TO *]", Range("hp", 100, None, True, True, 3)),
    ("hp:{100 TO 200}", Range("hp", 100, 200, False, False, 3)),
    ("hp:[* TO 60}", Range("hp", None, 60, True, False, 3)),
    ("hp:>=100", Range("hp", 100, None, True, True, 3)),
    ("hp:>100", Range("hp", 100, None, False, True, 3)),
    ("retreat:<2", Range("retreat", None, 2, True, False, 8)),
    ("retreat:<=2", Range("retreat", None, 2, True, True, 8)),
    ("dex:=6", Range("dex", 6, 6, True, True, 4)),
    ("-type:fire", Not(Match("type", "fire", 6))),
    ("NOT type:fire", Not(Match("type", "fire", 9))),
    ("a b", And((Fuzzy("a", 0), Fuzzy("b", 2)))),
    ("a AND b", And((Fuzzy("a", 0), Fuzzy("b", 6)))),
    ("a OR b", Or((Fuzzy("a", 0), Fuzzy("b", 5)))),
    ("a b OR c", Or((And((Fuzzy("a", 0), Fuzzy("b", 2))), Fuzzy("c", 7)))),
    ("(a OR b) c", And((Or((Fuzzy("a", 1), Fuzzy("b", 6))), Fuzzy("c", 9)))),
    ("-(a OR b)", Not(Or((Fuzzy("a", 2), Fuzzy("b", 7))))),
    ("--a", Not(Not(Fuzzy("a", 2)))),
    ("a or b", And((Fuzzy("a", 0), Fuzzy("or", 2), Fuzzy("b", 5)))),  # only OR is a keyword
    ("Ho-Oh", Fuzzy("Ho-Oh", 0)),  # a hyphen inside a word is the word's
    ("Farfetch'd", Fuzzy("Farfetch'd", 0)),
    ("pokémon", Fuzzy("pokémon", 0)),
    ("set:BRS:TG", Match("set", "BRS:TG", 4)),
    ("number:4/102", Match("number", "4/102", 7)),
    ("artist:arita", Match("illustrator", "arita", 7)),
    ("supertype:trainer", Match("category", "trainer", 10)),
    ('name:"a \\" b"', Match("name", 'a " b', 5)),
    ("\tcharizard\n", Fuzzy("charizard", 1)),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse(text: str, expected: object) -> None:
    assert parse(text) == expected


ERRORS = [
    # (query, what the message must say, the character it must point at)
    ("foo:bar", "unknown field 'foo'", 1),
    ("name:x colour:red", "unknown field 'colour'", 8),
    ("name:", "expected a value after 'name:'", 6),
    ("name: charizard", "expected a value after 'name:'", 6),
    (":x", "expected a field name before ':'", 1),
    ("(a", "expected ')' to close the '(' opened at character 1", 3),
    ("a (b c", "expected ')' to close the '(' opened at character 3", 7),
    ("a)", "unexpected ')'", 2),
    ("a ) b", "unexpected ')'", 3),
    ("()", "expected a term after '('", 2),
    ("a OR", "expected a term after OR", 5),
    ("OR a", "expected a term", 1),
    ("a AND", "expected a term after AND", 6),
    ("a OR )", "expected a term after OR", 6),
    ("- a", "expected a term right after '-'", 2),
    ("NOT", "expected a term after NOT", 4),
    ('"abc', "expected '\"' to close the quote opened at character 1", 5),
    ('""', "empty phrase", 1),
    ("hp:[1 TO x]", "expected a whole number", 10),
    ("hp:[1 x]", "expected 'TO' in the range", 7),
    ("hp:[1 TO 5", "expected ']' or '}' to close the range opened at character 4", 11),
    ("hp:[ TO 5]", "expected a whole number", 6),
    ("hp:abc", "expected a whole number (0 to 999999) for 'hp'", 4),
    ("hp:-5", "expected a whole number (0 to 999999) for 'hp'", 4),
    ("hp:1234567", "expected a whole number", 4),
    ("hp:>", "expected a whole number", 5),
    ("hp:>=1e3", "expected a whole number", 6),
    ("rarity:>5", "'rarity' takes no comparison", 8),
    ("name:[1 TO 2]", "'name' takes no range", 6),
    ("legal:banned", "'legal' expects standard or expanded", 7),
    ("number:4/x", "'number' expects a whole number after '/'", 8),
    ("number:4/²", "'number' expects a whole number after '/'", 8),
    ("hp:²", "expected a whole number", 4),
    ("a\x00b", "unexpected control or unassigned character", 2),
    ("a\x1bb", "unexpected control or unassigned character", 2),
    ("x\ud800", "unexpected control or unassigned character", 2),
    ("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1), "nests too deeply", MAX_DEPTH + 1),
    ("-" * (MAX_DEPTH + 1) + "a", "nests too deeply", MAX_DEPTH + 1),
    (" ".join(["a"] * (MAX_TERMS + 1)), "too many terms", 2 * MAX_TERMS + 1),
]


@pytest.mark.parametrize(("text", "says", "position"), ERRORS)
def test_errors_say_what_and_where(text: str, says: str, position: int) -> None:
    with pytest.raises(ValidationError) as caught:
        to_sql(text)
    message = str(caught.value)
    assert caught.value.field == "q"
    assert says in message
    assert message.startswith(f"at character {position}:"), message


def test_length_is_bounded() -> None:
    assert parse("a" * MAX_LENGTH) == Fuzzy("a" * MAX_LENGTH, 0)
    with pytest.raises(ValidationError, match=f"{MAX_LENGTH + 1} characters long"):
        parse("a" * (MAX_LENGTH + 1))


def test_nesting_up_to_the_limit_parses() -> None:
    depth = MAX_DEPTH - 1
    node = parse("(" * depth + "a" + ")" * depth)
    assert node == Fuzzy("a", depth)


# Every field and form, benign: the SQL vocabulary the compiler may emit.
BENIGN = [
    "charizard", '"mr. mime"', "name:char*", "set:base1", "set.name:jungle", "series:sv",
    "number:4/102", "number:[1 TO 10]", "rarity:rare", "type:fire", "type:fi*",
    "category:trainer", "stage:basic", "illustrator:arita", "regulation:h", "id:base1-4",
    "legal:standard", "legal:expanded", "hp:[100 TO *]", "hp:{1 TO 2}", "hp:[* TO *]",
    "retreat:<2", "dex:6", "dex:[1 TO 3]", "-a", "a OR b",
]
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*")
LITERAL = re.compile(r"'[^']*'")


def _vocabulary(sql: str) -> tuple[set[str], set[str]]:
    literals = set(LITERAL.findall(sql))
    return set(IDENTIFIER.findall(LITERAL.sub("", sql))), literals


WORDS, LITERALS = set(), set()
for _query in BENIGN:
    _words, _literals = _vocabulary(to_sql(_query).where)
    WORDS |= _words
    LITERALS |= _literals

# Hostile input: whatever the user typed reaches SQL only as a bound parameter.
HOSTILE = [
    "'; DROP TABLE cards; --",
    "name:\"'; DROP TABLE cards; --\"",
    "rarity:\"x' OR '1'='1\"",
    "set:base1'--",
    'illustrator:"$1::text); DELETE FROM cards; --"',
    "name:%",
    "name:_",
    "name:\\",
    "type:\"fire') OR TRUE --\"",
    "type:\"fi*') OR TRUE --\"",
    "series:\"sv' UNION SELECT * FROM pg_shadow --\"",
    "set.name:\"x'||pg_sleep(10)||'\"",
    "Robert'); DROP TABLE students;--",
    "number:\"1'; SELECT 1; --/5\"",
    "id:$$",
    "ポケモン",
    "🔥 type:fire",
    "שלום",
    "Ｃｈａｒｉｚａｒｄ",
    "e\u0301",  # a combining accent, decomposed
]


@pytest.mark.parametrize("text", HOSTILE)
def test_user_text_never_reaches_the_sql(text: str) -> None:
    try:
        compiled = to_sql(text)
    except ValidationError:
        return  # refused with a 4xx: fine too
    words, literals = _vocabulary(compiled.where)
    assert words <= WORDS, words - WORDS
    assert literals <= LITERALS, literals - LITERALS
    # every placeholder has its value, in order
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", compiled.where)})
    assert numbers == list(range(1, len(compiled.params) + 1))


def test_like_metacharacters_are_escaped() -> None:
    assert like_pattern("100%", contains=True) == "%100\\%%"
    assert like_pattern("a_b", contains=False) == "a\\_b"
    assert like_pattern("a\\b", contains=False) == "a\\\\b"
    assert like_pattern("char*", contains=True) == "char%"
    assert like_pattern("pokémon", contains=False) == "pokemon"


def test_compile_numbers_placeholders_from_the_offset() -> None:
    compiled = compile_query(parse("hp:>=100 name:char*"), first_param=3)
    assert "$3::int" in compiled.where and "$4::text" in compiled.where
    assert compiled.params == [100, "char%"]


def test_relevance_only_for_fuzzy_words_not_negated() -> None:
    assert to_sql("name:charizard").relevance is None
    assert to_sql("-charizard").relevance is None
    relevance = to_sql("charizard -ex").relevance
    assert relevance is not None and relevance.count("word_similarity") == 1


def test_empty_query_matches_everything() -> None:
    compiled = to_sql(None)
    assert compiled.where == "TRUE" and compiled.params == []


def test_negation_keeps_cards_whose_field_is_null() -> None:
    # NOT (rarity = x) would drop NULL rarities; IS NOT TRUE keeps them.
    assert "IS NOT TRUE" in to_sql("-rarity:common").where


FUZZ_ALPHABET = [*'abcXYZ019 \t"()-*:[]{}<>=/\\%_\'é♀🔥', "OR", "AND", "NOT", "TO", "name:",
                 "hp:", "set:", "number:", "type:", "dex:", "legal:"]


def test_random_input_parses_or_says_why() -> None:
    """Whatever comes in, the parser answers with SQL or a ValidationError, nothing else."""
    rng = random.Random(1234)
    for _ in range(3000):
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randrange(1, 40)))
        try:
            compiled = to_sql(text)
        except ValidationError as exc:
            assert exc.field == "q" and str(exc)
            continue
        numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", compiled.where)})
        assert numbers == list(range(1, len(compiled.params) + 1)), text
