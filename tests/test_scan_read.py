"""Reading rendered card photos with the real OCR engine (RapidOCR, PP-OCRv6 from its wheel):
the card found and straightened, its fields picked out, an upside-down card read turned
round, a photo without a card read as nothing; field extraction on what OCR really outputs;
and no network needed. A handful of photos: one engine per process (about a second to
build), then about 0.3 s a photo."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardmint.scan import fields
from cardmint.scan.ocr import Line
from cardmint.scan.read import read_photo
from scan_photos import card, need_fonts, photo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fonts() -> None:
    need_fonts()


@pytest.mark.parametrize("card_id, kind", [("base1-4", "table"), ("sm5-43", "perspective"),
                                           ("sv02-113", "rotation"), ("pl3-10", "scan")])
def test_fields_are_read_off_a_photo(card_id: str, kind: str) -> None:
    c = card(card_id)
    reading = read_photo(photo(card_id, kind))
    f = reading.fields
    assert (f.name, f.hp, f.number) == (c.name, str(c.hp), c.number)  # type: ignore[attr-defined]
    assert f.set_code == c.set_code  # type: ignore[attr-defined]
    assert f.illustrator and f.illustrator.split()[-1] in c.illustrator  # type: ignore[attr-defined]
    assert not reading.turned
    if kind != "scan":  # a table around the card: its outline was found
        assert reading.corners is not None and len(reading.corners) == 4
    doc = reading.as_dict()
    assert doc["engine"].startswith("rapidocr") and doc["top"] and doc["bottom"]


def test_an_upside_down_card_is_read_turned_round() -> None:
    img = Image.open(io.BytesIO(photo("swsh1-84", "scan")))
    flipped = img.rotate(180)
    out = io.BytesIO()
    flipped.save(out, "JPEG", quality=90)
    reading = read_photo(out.getvalue())
    assert reading.turned
    assert (reading.fields.name, reading.fields.number) == ("Haunter", "84/202")


def test_a_photo_without_a_card_reads_as_nothing() -> None:
    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 255, (800, 600, 3), dtype=np.uint8))
    out = io.BytesIO()
    noise.save(out, "JPEG")
    reading = read_photo(out.getvalue())
    assert reading.fields.found == 0 and reading.fields.number is None


def _line(text: str, top: float = 0, height: float = 20, left: float = 0) -> Line:
    return Line(text, 0.9, ((left, top), (left + 100, top), (left + 100, top + height),
                            (left, top + height)))


@pytest.mark.parametrize("top, name, hp", [
    ([_line("BASIC", 0, 12), _line("Electabuzz", 20, 30), _line("HP80", 20, 28, 400)],
     "Electabuzz", "80"),
    ([_line("STAGE 2", 0, 12), _line("RhyperiorHP140", 20, 30)], "Rhyperior", "140"),
    ([_line("BASIC Pikachu", 20, 30), _line("60 HP", 20, 28, 400)], "Pikachu", "60"),
    ([_line("Mr. Mime", 20, 30), _line("HP 7O", 20, 28, 400)], "Mr. Mime", "7O"),
    ([_line("TRAINER", 0, 12), _line("Professor's Research", 20, 30)],
     "Professor's Research", None),
])
def test_name_and_hp_from_what_ocr_outputs(top: list[Line], name: str, hp: str | None) -> None:
    assert fields.name_and_hp(top) == (name, hp)


@pytest.mark.parametrize("bottom, number, code", [
    (["Illus. Ken Sugimori", "4/102", "©1999 Pokémon / Nintendo / Creatures"], "4/102", None),
    (["G PAL EN 113/193"], "113/193", "PAL"),
    (["SVIEN 012/198"], "012/198", "SVI"),  # the code glued to EN
    (["TG05/TG30"], "TG05/TG30", None),
    (["43 | 156"], "43/156", None),
    (["431156"], "431156", None),  # the slash read as a digit: identification undoes it
    (["SWSH001"], "SWSH001", None),
    (["©2018 Pokémon / Nintendo / Creatures"], None, None),  # a year is not a number
])
def test_number_and_set_code_from_what_ocr_outputs(bottom: list[str], number: str | None,
                                                   code: str | None) -> None:
    assert fields.number_and_code([_line(t) for t in bottom]) == (number, code)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root to run without a network")
def test_nothing_is_downloaded_the_engine_runs_without_a_network(tmp_path: Path) -> None:
    """The models come from the installed wheel: reading works in a process that has no
    network at all (a new, empty network namespace)."""
    path = tmp_path / "card.jpg"
    path.write_bytes(photo("base1-4", "scan"))
    code = ("import sys; from cardmint.scan.read import read_photo; "
            "r = read_photo(open(sys.argv[1], 'rb').read()); print(r.fields.name)")
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", code, str(path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Charizard"
