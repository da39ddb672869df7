"""Identification accuracy and latency on OCR-noised cases generated from the catalog.

    .venv/bin/python -m bench.identify [--cases 3300] [--seed 7] [--json]
    .venv/bin/python -m bench.identify --fit        # refit the weights of catalog.identify
    .venv/bin/python -m bench.identify --home DIR   # use a running cluster, catalog loaded

Without --home it starts a fresh cluster under /tmp, migrates it, loads the full catalog,
and stops and deletes it at the end. Each case is one card, drawn at random (fixed seed),
made into what OCR would read off it (name line, number as printed, HP for Pokémon, the
set code on cards that print one), then damaged by one kind of noise. Reported: top-1 and
top-3 accuracy per noise kind and overall, the share of cases that no reader could tell
from another card (same folded name, number and total: the ceiling), the latency of
`identify()` (p50/p95, sequential, through the application's pool), and calibration
(accuracy of the top candidate by confidence band).

The case generator is imported by tests/test_identify.py for its smaller fixed-seed sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardmint.catalog import identify as ident
from cardmint.catalog.identify import OcrInput

KINDS = ("clean", "dropped", "doubled", "o0", "l1", "s5", "b8", "stray", "accents",
         "truncated", "mixed", "number", "no_number", "text")
SIMPLE = ("dropped", "doubled", "o0", "l1", "s5", "b8", "stray", "accents")
STRAY = ".,'`*~^°:;|_-•"
# Cards print their set code next to the number since Scarlet & Violet (2023).
CODE_SINCE = "2023-01-01"
PROMO_SETS = {"basep", "np", "dpp", "hgssp", "bwp", "xyp", "smp", "swshp", "svp", "mep"}

CARDS_SQL = """
SELECT c.id, c.name, c.local_id, c.number_key, c.set_id, c.hp, c.category, c.illustrator,
       s.printed_total, s.abbreviation, s.release_date::text AS release_date
FROM cards c JOIN sets s ON s.id = c.set_id ORDER BY c.id
"""


@dataclass(frozen=True)
class Card:
    id: str
    name: str
    local_id: str
    number_key: str
    set_id: str
    hp: int | None
    category: str
    illustrator: str | None
    printed_total: int | None
    abbreviation: str | None
    release_date: str | None


@dataclass(frozen=True)
class Case:
    kind: str
    card_id: str
    ocr: OcrInput
    shown: OcrInput  # the same, undamaged: what the card showed (for the ceiling)


def printed_number(card: Card) -> str:
    """The number as the card prints it: 4/102, TG05/TG30, SV001/SV122; promos: SWSH001."""
    if card.set_id in PROMO_SETS or not card.printed_total:
        return card.local_id
    prefix = "".join(ch for ch in card.local_id[:4] if ch.isalpha() and ch.isupper())
    if prefix and card.local_id.startswith(prefix):
        return f"{card.local_id}/{prefix}{card.printed_total}"
    return f"{card.local_id}/{card.printed_total}"


def strip_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(ch))


def _swap(text: str, chars: str, into: str, rng: random.Random, p: float = 0.7) -> str:
    """Each character of `chars` in text becomes one of `into` with probability p; at least
    one does if any is there."""
    spots = [i for i, ch in enumerate(text) if ch in chars]
    if not spots:
        return text
    chosen = [i for i in spots if rng.random() < p] or [rng.choice(spots)]
    out = list(text)
    for i in chosen:
        out[i] = rng.choice(into)
    return "".join(out)


CONFUSIONS = {  # kind: (in the name, read as), (in the number, read as)
    "o0": (("oO", "0"), ("0", "OoD")),
    "l1": (("liI", "1lI|"), ("1", "lI|")),
    "s5": (("sS", "5"), ("5", "Ss")),
    "b8": (("bB", "8"), ("8", "B")),
}


def _noisy(kind: str, base: OcrInput, rng: random.Random) -> OcrInput | None:
    """`base` damaged by one kind of noise, or None if that kind cannot touch this card."""
    name = base.name or ""
    letters = [i for i, ch in enumerate(name) if ch.isalpha()]
    if kind == "dropped":
        if len(letters) < 4:
            return None
        i = rng.choice(letters[1:])
        return _with(base, name=name[:i] + name[i + 1:])
    if kind == "doubled":
        if not letters:
            return None
        i = rng.choice(letters)
        return _with(base, name=name[:i] + name[i] + name[i:])
    if kind in CONFUSIONS:
        (in_name, as_name), (in_number, as_number) = CONFUSIONS[kind]
        new_name = _swap(name, in_name, as_name, rng)
        new_number = _swap(base.number or "", in_number, as_number, rng, p=0.5)
        hp = base.hp
        if isinstance(hp, str) and kind != "l1":
            hp = _swap(hp, in_number, as_number, rng, p=0.5)
        if new_name == name and new_number == base.number:
            return None
        return _with(base, name=new_name, number=new_number or None, hp=hp)
    if kind == "stray":
        out = name
        for _ in range(rng.choice((1, 1, 2))):
            i = rng.randrange(len(out) + 1)
            out = out[:i] + rng.choice(STRAY) + out[i:]
        number = base.number
        if number and rng.random() < 0.3:
            number = rng.choice(("", "#", "'")) + number + rng.choice((".", ",", "`"))
        return _with(base, name=out, number=number)
    if kind == "accents":
        plain = strip_accents(name)
        if rng.random() < 0.5:
            plain = plain.upper()
        elif plain == name:
            plain = plain.lower()
        return _with(base, name=plain)
    if kind == "truncated":
        if len(name) < 6:
            return None
        keep = max(3, round(len(name) * rng.uniform(0.4, 0.8)))
        return _with(base, name=name[:keep].rstrip())
    if kind == "number":
        return _misread_number(base, rng)
    raise ValueError(kind)


DIGIT_MISREADS = {"1": "7", "7": "1", "3": "8", "8": "3", "5": "6", "6": "5", "0": "8",
                  "9": "8", "2": "7", "4": "1"}


def _misread_number(base: OcrInput, rng: random.Random) -> OcrInput | None:
    """Number damage that no confusion table undoes: a total lost or misread, a digit of
    the card number misread, the slash read as a space."""
    number = base.number or ""
    left, slash, right = number.partition("/")
    if not slash:
        return None
    how = rng.choice(("no_total", "total_digit", "number_digit", "space"))
    if how == "no_total":
        return _with(base, number=left)
    if how == "space":
        return _with(base, number=f"{left} {right}")
    side = right if how == "total_digit" else left
    spots = [i for i, ch in enumerate(side) if ch in DIGIT_MISREADS]
    if not spots:
        return None
    i = rng.choice(spots)
    side = side[:i] + DIGIT_MISREADS[side[i]] + side[i + 1:]
    return _with(base, number=f"{left}/{side}" if how == "total_digit" else f"{side}/{right}")


def _with(base: OcrInput, **changes: Any) -> OcrInput:
    return OcrInput(**{**base.__dict__, **changes})


def clean_input(card: Card, rng: random.Random) -> OcrInput:
    hp = str(card.hp) if card.hp and rng.random() < 0.7 else None
    code = None
    if card.abbreviation and (card.release_date or "") >= CODE_SINCE and rng.random() < 0.8:
        code = card.abbreviation.split(":")[0]
    return OcrInput(name=card.name, number=printed_number(card), set_code=code, hp=hp)


def make_case(card: Card, kind: str, rng: random.Random) -> Case | None:
    base = clean_input(card, rng)
    if kind == "clean":
        return Case(kind, card.id, base, base)
    if kind == "text":  # no structured fields: the whole card's text in one blob
        lines = [card.name, f"HP {card.hp}" if base.hp else "", base.set_code or "",
                 f"Illus. {card.illustrator}" if card.illustrator else "", base.number or ""]
        return Case(kind, card.id, OcrInput(text="\n".join(x for x in lines if x)), base)
    if kind == "no_number":  # the number unreadable; the name lightly damaged
        base = _with(base, number=None)
        ocr = _noisy(rng.choice(SIMPLE), base, rng) or base
        return Case(kind, card.id, ocr, base)
    if kind == "mixed":
        ocr: OcrInput | None = base
        for k in rng.sample(SIMPLE, 2) + (["truncated"] if rng.random() < 0.3 else []):
            ocr = _noisy(k, ocr, rng) or ocr
        return Case(kind, card.id, ocr, base) if ocr != base else None
    ocr = _noisy(kind, base, rng)
    return Case(kind, card.id, ocr, base) if ocr is not None else None


def make_cases(cards: Sequence[Card], per_kind: int, seed: int,
               kinds: Sequence[str] = KINDS) -> list[Case]:
    """`per_kind` cases of each kind, cards drawn uniformly; for `accents`, half from the
    names that have accents (else that kind would mostly test upper case)."""
    rng = random.Random(seed)
    accented = [c for c in cards if strip_accents(c.name) != c.name]
    cases: list[Case] = []
    for kind in kinds:
        made = 0
        while made < per_kind:
            pool = accented if kind == "accents" and made % 2 == 0 else cards
            case = make_case(rng.choice(pool), kind, rng)
            if case is not None:
                cases.append(case)
                made += 1
    return cases


async def load_cards(db: Any) -> list[Card]:
    return [Card(**dict(r)) for r in await db.fetch(CARDS_SQL)]


class Ceiling:
    """The best top-1 any reader could reach on a case: 1/k where k cards show exactly what
    the undamaged card showed (folded name, number, printed total, set code, HP)."""

    def __init__(self, cards: Sequence[Card]) -> None:
        self.cards = {c.id: c for c in cards}
        self.groups: dict[tuple[bool, ...], dict[tuple[Any, ...], int]] = {}

    @staticmethod
    def key(card: Card, shown: tuple[bool, ...]) -> tuple[Any, ...]:
        name, number, total, code, hp = shown
        return (ident.fold_name(card.name) if name else None,
                card.number_key if number else None,
                card.printed_total if total else None,
                (card.abbreviation or "").split(":")[0] if code else None,
                card.hp if hp else None)

    def __call__(self, case: Case) -> float:
        s = case.shown
        shown = (bool(s.name), bool(s.number), "/" in (s.number or ""), bool(s.set_code),
                 bool(s.hp))
        if shown not in self.groups:
            counts: dict[tuple[Any, ...], int] = defaultdict(int)
            for card in self.cards.values():
                counts[self.key(card, shown)] += 1
            self.groups[shown] = counts
        return 1.0 / self.groups[shown][self.key(self.cards[case.card_id], shown)]


# -- running ----------------------------------------------------------------------------------

async def evaluate(db: Any, cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Identify every case in turn; one result per case."""
    results = []
    for case in cases:
        began = time.perf_counter()
        found = await ident.identify(db, case.ocr, limit=3)
        elapsed = time.perf_counter() - began
        ids = [c.card_id for c in found]
        results.append({"kind": case.kind, "top1": ids[:1] == [case.card_id],
                        "top3": case.card_id in ids, "ms": elapsed * 1000,
                        "confidence": found[0].confidence if found else 0.0})
    return results


def summarize(results: Sequence[dict[str, Any]], ceiling: dict[str, float]) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_kind[r["kind"]].append(r)

    def rates(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"n": len(rs), "top1": round(sum(r["top1"] for r in rs) / len(rs), 4),
                "top3": round(sum(r["top3"] for r in rs) / len(rs), 4)}

    ms = sorted(r["ms"] for r in results)
    bands = []
    for low, high in ((0.0, 0.5), (0.5, 0.85), (0.85, 0.95), (0.95, 1.01)):
        rs = [r for r in results if low <= r["confidence"] < high]
        if rs:
            bands.append({"confidence": f"[{low:.2f}, {min(high, 1.0):.2f}"
                          + ("]" if high > 1 else ")"), "n": len(rs),
                          "top1": round(sum(r["top1"] for r in rs) / len(rs), 4),
                          "mean_confidence": round(statistics.fmean(r["confidence"]
                                                                    for r in rs), 4)})
    numbered = [r for r in results if r["kind"] != "no_number"]
    return {
        "kinds": {k: {**rates(v), "ceiling": ceiling.get(k)} for k, v in by_kind.items()},
        "with_number": {**rates(numbered), "ceiling": ceiling.get("with_number")},
        "overall": {**rates(results), "ceiling": ceiling.get("overall")},
        "latency_ms": {"p50": round(_pct(ms, 50), 2), "p95": round(_pct(ms, 95), 2),
                       "p99": round(_pct(ms, 99), 2), "max": round(ms[-1], 2)},
        "calibration": bands,
    }


def _pct(sorted_values: Sequence[float], pct: float) -> float:
    k = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


# -- fitting the weights ----------------------------------------------------------------------

async def training_rows(db: Any, cases: Sequence[Case]) -> list[tuple[list[list[float]], int]]:
    """Per case: the candidates' feature vectors and the index of the true card (-1: the
    true card is not among them, the "none of these" option is right)."""
    out = []
    for case in cases:
        found = await ident.gather(db, ident.read(case.ocr))
        vectors = [[f[k] for k in ident.FEATURES] for _, f in found]
        truth = next((i for i, (row, _) in enumerate(found) if row["id"] == case.card_id), -1)
        out.append((vectors, truth))
    return out


def fit(rows: Sequence[tuple[list[list[float]], int]], *, iterations: int = 25,
        l2: float = 1.0) -> dict[str, float]:
    """Maximum likelihood for the conditional logit (candidates plus a "none of these"
    option scored 0), by Newton's method with a small ridge; `bias` is the weight of a
    constant feature."""
    n = len(ident.FEATURES) + 1
    data = [([[1.0, *x] for x in xs], truth) for xs, truth in rows if xs]
    w = [0.0] * n
    for _ in range(iterations):
        grad = [-l2 * wk for wk in w]
        hess = [[l2 if i == j else 0.0 for j in range(n)] for i in range(n)]  # of -loglik
        for xs, truth in data:
            scores = [sum(wk * xk for wk, xk in zip(w, x, strict=True)) for x in xs]
            top = max(0.0, *scores)
            exps = [math.exp(sc - top) for sc in scores]
            z = math.exp(-top) + sum(exps)
            ps = [e / z for e in exps]
            mean = [sum(p * x[k] for p, x in zip(ps, xs, strict=True)) for k in range(n)]
            if truth >= 0:
                for k in range(n):
                    grad[k] += xs[truth][k]
            for k in range(n):
                grad[k] -= mean[k]
            for p, x in zip(ps, xs, strict=True):
                if p < 1e-9:
                    continue
                for i in range(n):
                    pxi = p * x[i]
                    if pxi:
                        row = hess[i]
                        for j in range(n):
                            row[j] += pxi * x[j]
            for i in range(n):
                for j in range(n):
                    hess[i][j] -= mean[i] * mean[j]
        step = _solve(hess, grad)
        w = [wk + sk for wk, sk in zip(w, step, strict=True)]
        if max(abs(sk) for sk in step) < 1e-4:
            break
    return {"bias": round(w[0], 3), **{k: round(wk, 3)
                                       for k, wk in zip(ident.FEATURES, w[1:], strict=True)}}


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """a x = b by Gaussian elimination with partial pivoting (a is small and well posed)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


# -- main -------------------------------------------------------------------------------------

async def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from cardmint.cluster.state import with_topology
    from cardmint.config import Settings
    from cardmint.db import Database

    settings = with_topology(Settings(_env_file=None, home=home))  # type: ignore[call-arg]
    db = Database(settings, replica_dsns=[])  # the primary only: latency without routing
    await db.open(monitor=False)
    try:
        cards = await load_cards(db)
        per_kind = max(1, args.cases // len(KINDS))
        if args.fit:
            train = make_cases(cards, per_kind, args.seed + 1000)
            rows = await training_rows(db, train)
            return {"weights": fit(rows), "cases": len(train)}
        cases = make_cases(cards, per_kind, args.seed)
        await evaluate(db, cases[:50])  # warm the pool, caches and plans
        results = await evaluate(db, cases)
        best = Ceiling(cards)
        ceiling: dict[str, float] = {}
        for kind in {c.kind for c in cases} | {"overall", "with_number"}:
            cs = [c for c in cases if kind in ("overall", c.kind)
                  or (kind == "with_number" and c.kind != "no_number")]
            ceiling[kind] = round(statistics.fmean(best(c) for c in cs), 4)
        return {"benchmark": "identify", "seed": args.seed, "cases": len(cases),
                "cards": len(cards), **summarize(results, ceiling)}
    finally:
        await db.close()


async def fresh_cluster(root: Path) -> Path:
    from cardmint.catalog.load import load_catalog
    from cardmint.cluster.local.engine import LocalCluster
    from cardmint.cluster.state import with_topology
    from cardmint.config import Settings, secret
    from cardmint.db import migrate
    from cardmint.db.connect import connection

    home = root / "home"
    cluster = LocalCluster(Settings(_env_file=None, home=home))  # type: ignore[call-arg]
    await cluster.up(replicas=0)
    settings = with_topology(Settings(_env_file=None, home=home))  # type: ignore[call-arg]
    await asyncio.to_thread(migrate.upgrade, secret(settings.migration_url))
    async with connection(secret(settings.migration_url), settings) as conn:
        await load_catalog(conn)
    return home


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.home:
        return await run(args, Path(args.home))
    from cardmint.cluster.local.engine import LocalCluster
    from cardmint.config import Settings

    root = Path(tempfile.mkdtemp(prefix="cardmint-bench-", dir="/tmp"))
    root.chmod(0o755)  # noqa: ASYNC240 (once, before anything runs)
    try:
        home = await fresh_cluster(root)
        try:
            return await run(args, home)
        finally:
            await LocalCluster(Settings(_env_file=None, home=home)).down(  # type: ignore[call-arg]
                purge=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def print_table(result: dict[str, Any]) -> None:
    print(f"{'noise':<11} {'n':>5} {'top-1':>7} {'top-3':>7} {'ceiling':>8}")
    for kind in (*KINDS, "with_number", "overall"):
        r = result[kind] if kind in ("overall", "with_number") else result["kinds"].get(kind)
        if r:
            print(f"{kind:<11} {r['n']:>5} {r['top1']:>7.3f} {r['top3']:>7.3f} "
                  f"{r['ceiling']:>8.3f}")
    lat = result["latency_ms"]
    print(f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    for band in result["calibration"]:
        print(f"confidence {band['confidence']:<13} n={band['n']:<5} top-1 {band['top1']:.3f} "
              f"(mean confidence {band['mean_confidence']:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3300, help="about this many, all kinds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", help="a running cluster's CARDMINT_HOME, catalog loaded")
    parser.add_argument("--fit", action="store_true", help="fit and print the weights")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json or args.fit:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
