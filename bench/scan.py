"""Scan evaluation: synthetic card photos, read by the real OCR and identified against the
full catalog; top-1/top-3 by degradation and the time per photo on this machine's CPU.

    .venv/bin/python -m bench.scan [--per-kind 40] [--seed 11] [--json]
    .venv/bin/python -m bench.scan --home DIR            # a running cluster, catalog loaded
    .venv/bin/python -m bench.scan --engine tesseract    # the same photos through Tesseract
                                                         # (Debian's tesseract-ocr, installed
                                                         # by hand: only for this comparison)
    .venv/bin/python -m bench.scan --failures out.json   # every miss with what OCR read

Without --home it starts a fresh cluster under /tmp, migrates it, loads the full catalog
(21,066 cards) and deletes it at the end. Cards are drawn at random (fixed seed); each is
rendered (bench/cardphoto.py: the card's real name, HP, number/total, set code, illustrator,
attacks, in Debian's fonts) and photographed under each degradation. Then, timed per photo:

- intake: `cardmint.scan.images.accept` (decode, EXIF orientation, re-encode without
  metadata), what an upload costs before it is queued;
- read: decode the stored JPEG, find and straighten the card, OCR its two bands, fields;
- identify: `cardmint.catalog.identify.identify` on what was read (one SQL round trip).

`read_cpu` is the CPU time of the read (one ONNX Runtime thread): what it costs on a core
of its own, whatever else the machine is doing; the other figures are wall time.

Photo to candidates = read + identify: what the worker spends on one capture. `ceil` is
the top-1 of identification given exactly what the card prints (name, HP, number, set
code, illustrator): what a perfect reader would reach; below 1 where reprints print the
same (e.g. the same Pokémon, HP and number in two sets without a set code).

The set is synthetic: our layout and fonts, flat procedural artwork, simulated lenses and
light. It cannot show how OCR fares on the real card design (holofoil, full-art cards,
stylised fonts, small print on textured borders), on real phone optics, nor on cards in
sleeves or toploaders. Read its accuracy as a check of the pipeline, not of the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cardphoto
from bench.identify import fresh_cluster
from cardmint.catalog.identify import OcrInput, identify
from cardmint.scan.images import accept
from cardmint.scan.ocr import Line, engine
from cardmint.scan.read import decode, read_pixels

KINDS = cardphoto.DEGRADATIONS


@dataclass
class Result:
    kind: str
    card_id: str
    truth: dict[str, Any]
    read: dict[str, Any]
    rank: int | None  # 0 = top-1; None = not among the candidates
    ms: dict[str, float]
    ceiling: bool = False  # identified from exactly what the card prints (no OCR)


class Tesseract:
    """Debian's tesseract (5.x), for the engine comparison only: one process per band image,
    sparse-text mode, word boxes grouped into lines."""

    name = "tesseract"

    def read(self, bgr: Any, *, sensitive: bool = False) -> list[Line]:
        import cv2

        _, png = cv2.imencode(".png", bgr)
        done = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11", "tsv"],
                              input=png.tobytes(), capture_output=True, check=True)
        lines: dict[tuple[str, str, str], list[tuple[str, float, int, int, int, int]]] = {}
        for row in done.stdout.decode("utf-8", "replace").splitlines()[1:]:
            cols = row.split("\t")
            if len(cols) < 12 or not cols[11].strip() or float(cols[10]) < 0:
                continue
            left, top, w, h = (int(c) for c in cols[6:10])
            lines.setdefault((cols[2], cols[3], cols[4]), []).append(
                (cols[11], float(cols[10]) / 100, left, top, w, h))
        out = []
        for words in lines.values():
            x0 = min(w[2] for w in words)
            y0 = min(w[3] for w in words)
            x1 = max(w[2] + w[4] for w in words)
            y1 = max(w[3] + w[5] for w in words)
            out.append(Line(" ".join(w[0] for w in words),
                            statistics.fmean(w[1] for w in words),
                            ((x0, y0), (x1, y0), (x1, y1), (x0, y1))))
        return sorted(out, key=lambda ln: (ln.top, ln.left))


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def evaluate(db: Any, cards: Sequence[cardphoto.CardData], kinds: Sequence[str],
                   seed: int, ocr: Any) -> list[Result]:
    results = []
    for kind in kinds:
        for card in cards:
            rng = random.Random(f"{seed}-{card.id}-{kind}")
            jpeg = cardphoto.photograph(cardphoto.render_face(card, rng), kind, rng)
            t0 = time.perf_counter()
            stored = accept(jpeg, max_bytes=50_000_000, max_pixels=100_000_000).jpeg
            t1, c1 = time.perf_counter(), time.process_time()
            reading = read_pixels(decode(stored), ocr=ocr)
            t2, c2 = time.perf_counter(), time.process_time()
            found = await identify(db, reading.fields.ocr_input(), limit=5)
            t3 = time.perf_counter()
            ids = [c.card_id for c in found]
            printed = await identify(db, OcrInput(
                name=card.name, hp=card.hp, number=card.number, set_code=card.set_code,
                text=f"Illus. {card.illustrator}" if card.illustrator else None), limit=1)
            f = reading.fields
            results.append(Result(
                kind, card.id,
                {"name": card.name, "hp": card.hp, "number": card.number,
                 "set_code": card.set_code},
                {"name": f.name, "hp": f.hp, "number": f.number, "set_code": f.set_code,
                 "text": f.text, "turned": reading.turned,
                 "top": [c.card_id for c in found[:3]]},
                ids.index(card.id) if card.id in ids else None,
                {"intake": (t1 - t0) * 1000, "read": (t2 - t1) * 1000,
                 "identify": (t3 - t2) * 1000, "total": (t3 - t1) * 1000,
                 "read_cpu": (c2 - c1) * 1000},
                bool(printed) and printed[0].card_id == card.id))
    return results


def summarize(results: Sequence[Result]) -> dict[str, Any]:
    by_kind: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r)
        by_kind["overall"].append(r)

    def stats(rs: Sequence[Result]) -> dict[str, Any]:
        n = len(rs)
        return {
            "n": n,
            "top1": round(sum(r.rank == 0 for r in rs) / n, 3),
            "top3": round(sum(r.rank is not None and r.rank < 3 for r in rs) / n, 3),
            "ceiling": round(sum(r.ceiling for r in rs) / n, 3),
            "name_read": round(sum(r.read["name"] == r.truth["name"] for r in rs) / n, 3),
            "number_read": round(sum(r.read["number"] == r.truth["number"] for r in rs) / n, 3),
            "no_candidate": sum(not r.read["top"] for r in rs),
            "total_ms_p50": _pct([r.ms["total"] for r in rs], 0.5),
            "total_ms_p95": _pct([r.ms["total"] for r in rs], 0.95),
        }

    timing = {part: {"p50": _pct([r.ms[part] for r in results], 0.5),
                     "p95": _pct([r.ms[part] for r in results], 0.95),
                     "max": _pct([r.ms[part] for r in results], 1.0)}
              for part in ("intake", "read", "read_cpu", "identify", "total")}
    return {"kinds": {k: stats(v) for k, v in by_kind.items()}, "timing_ms": timing}


async def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from cardmint.config import Settings
    from cardmint.db import Database

    missing = cardphoto.missing_fonts()
    if missing:
        raise SystemExit(f"fonts missing: {', '.join(missing)} (make fonts)")
    settings = Settings(_env_file=None, home=home)  # type: ignore[call-arg]
    db = Database(settings, replica_dsns=[])
    await db.open(monitor=False)
    try:
        rng = random.Random(args.seed)
        cards = cardphoto.sample_cards(cardphoto.cards_from_catalog(), args.per_kind, rng)
        if args.engine == "tesseract" and shutil.which("tesseract") is None:
            raise SystemExit("--engine tesseract needs Debian's tesseract-ocr "
                             "(apt-get install tesseract-ocr); it serves this comparison only")
        ocr = Tesseract() if args.engine == "tesseract" else engine(args.threads)
        kinds = args.kinds.split(",") if args.kinds else KINDS
        await evaluate(db, cards[:3], ["table"], args.seed + 1, ocr)  # warm up
        started = time.monotonic()
        results = await evaluate(db, cards, kinds, args.seed, ocr)
        summary = summarize(results)
        if args.failures:
            misses = [r.__dict__ for r in results if r.rank != 0]
            await asyncio.to_thread(Path(args.failures).write_text,
                                    json.dumps(misses, indent=1, default=str))
        return {"benchmark": "scan", "engine": getattr(ocr, "name", "?"), "seed": args.seed,
                "cards": len(cards), "photos": len(results),
                "wall_s": round(time.monotonic() - started, 1),
                "load_average": [round(x, 2) for x in os.getloadavg()], **summary}
    finally:
        await db.close()


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
    print(f"engine {result['engine']}, {result['photos']} photos of {result['cards']} cards, "
          f"seed {result['seed']}, {result['wall_s']} s, load {result['load_average']}")
    print(f"{'degradation':<12} {'n':>4} {'top-1':>6} {'top-3':>6} {'ceil':>6} {'name':>6} "
          f"{'number':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for kind in (*KINDS, "overall"):
        r = result["kinds"].get(kind)
        if r:
            print(f"{kind:<12} {r['n']:>4} {r['top1']:>6.3f} {r['top3']:>6.3f} "
                  f"{r['ceiling']:>6.3f} "
                  f"{r['name_read']:>6.3f} {r['number_read']:>7.3f} {r['total_ms_p50']:>7.0f} "
                  f"{r['total_ms_p95']:>7.0f}")
    for part, t in result["timing_ms"].items():
        print(f"{part:<9} p50 {t['p50']:>6.1f} ms  p95 {t['p95']:>6.1f} ms  "
              f"max {t['max']:>6.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=40, help="cards (each in every kind)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--kinds", help="comma-separated degradations (default: all)")
    parser.add_argument("--engine", choices=("rapidocr", "tesseract"), default="rapidocr")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--home", help="a running cluster's CARDMINT_HOME, catalog loaded")
    parser.add_argument("--failures", help="write every miss, with what was read, here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
