"""From a photo to what OCR reads off the card: decode, find and straighten the card, read its
top and bottom bands, pick the fields.

Only the two bands that carry what identifies a card are read (the name and HP at the top;
the illustrator, number and set code at the bottom), stacked into one image so that the
detector runs once: the artwork and the attack text in between would cost most of the time
and add nothing the identification needs. A card upside down reads as noise the right way
up; when the upright reading finds fewer than two of name, HP and number, the card is read
turned round too, then the next likeliest outline, and the best reading kept. A name read
without a number gets a second look at the bottom band, sharpened.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from PIL import Image

from cardmint.scan import locate as locating
from cardmint.scan.fields import CardText, card_text
from cardmint.scan.images import ImageRejected
from cardmint.scan.locate import Image as Pixels
from cardmint.scan.ocr import ENGINE_NAME, Line, OcrEngine, engine

DECODE_SIDE = 2000  # px: JPEGs are decoded at a reduced scale down to about this
TOP_BAND = (0.0, 0.13)  # of the straightened card's height
BOTTOM_BAND = (0.89, 1.0)
GAP = 16  # px of white between the stacked bands


@dataclass(frozen=True)
class PhotoReading:
    """What was read off one photo, and how."""

    fields: CardText
    top: list[Line]
    bottom: list[Line]
    corners: list[list[float]] | None  # the card's outline in the photo; None: whole photo
    turned: bool  # read upside down
    timings_ms: dict[str, float] = field(default_factory=dict)
    engine: str = ENGINE_NAME

    def as_dict(self) -> dict[str, Any]:
        """For the capture's document: the fields, each line with its score, the outline."""
        def lines(band: list[Line]) -> list[dict[str, Any]]:
            return [{"text": ln.text, "score": round(ln.score, 3),
                     "box": [[round(x), round(y)] for x, y in ln.box]} for ln in band]
        return {"engine": self.engine, "top": lines(self.top), "bottom": lines(self.bottom),
                "corners": self.corners, "turned": self.turned,
                "illustrator": self.fields.illustrator,
                "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()}}


def decode(data: bytes) -> Pixels:
    """RGB pixels of a stored photo (a JPEG: decoded at 1/2, 1/4 … scale when that still
    leaves DECODE_SIDE pixels, which is much faster than decoding all and resizing)."""
    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
        return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"the photo cannot be decoded: {type(exc).__name__}") from None


def _bands(card: Pixels) -> tuple[Pixels, int]:
    """The card's top and bottom bands stacked with a white gap (BGR for the engine), and
    the y where the bottom band starts."""
    h, w = card.shape[:2]
    top = card[round(h * TOP_BAND[0]):round(h * TOP_BAND[1])]
    bottom = card[round(h * BOTTOM_BAND[0]):round(h * BOTTOM_BAND[1])]
    gap = np.full((GAP, w, 3), 255, np.uint8)
    stacked = np.vstack([top, gap, bottom])
    return cv2.cvtColor(stacked, cv2.COLOR_RGB2BGR), top.shape[0] + GAP


def _read_card(card: Pixels, ocr: OcrEngine) -> tuple[CardText, list[Line],
                                                                       list[Line]]:
    stacked, split = _bands(card)
    lines = ocr.read(stacked)
    centre = [(ln, (ln.top + ln.bottom) / 2) for ln in lines]
    top = [ln for ln, y in centre if y < split - GAP / 2]
    bottom = [ln for ln, y in centre if y >= split - GAP / 2]
    return card_text(top, bottom), top, bottom


def _second_look(card: Pixels, fields: CardText, top: list[Line],
                 bottom: list[Line], ocr: OcrEngine) -> tuple[CardText, list[Line]]:
    """The bottom band sharpened and read with lower thresholds: the number of a blurred
    photo is often found then (a third of those missed, on the blur degradation)."""
    h = card.shape[0]
    band = np.ascontiguousarray(card[round(h * BOTTOM_BAND[0]):round(h * BOTTOM_BAND[1])])
    soft = cv2.GaussianBlur(band, (0, 0), 2.0)
    sharp = cv2.addWeighted(band, 1.8, soft, -0.8, 0)
    lines = ocr.read(cv2.cvtColor(sharp, cv2.COLOR_RGB2BGR), sensitive=True)
    again = card_text(top, lines)
    if again.number is None:
        return fields, bottom
    return replace(fields, number=again.number, set_code=again.set_code,
                   illustrator=fields.illustrator or again.illustrator,
                   text="\n".join(ln.text for ln in (*top, *lines))), lines


MAX_READS = 4  # OCR runs per photo at most: the likeliest outline both ways up, then others


def read_pixels(rgb: Pixels, *, ocr: OcrEngine | None = None) -> PhotoReading:
    """Read a decoded photo (RGB): the likeliest outline first, upright then turned round,
    then the other outlines, until a reading has two of name, HP and number."""
    ocr = ocr or engine()
    t0 = time.perf_counter()
    found = locating.candidates(rgb)
    t1 = time.perf_counter()
    best: tuple[CardText, list[Line], list[Line], locating.Located, bool] | None = None
    reads = 0
    for i, located in enumerate(found):
        for turned in (False, True):
            if reads >= MAX_READS or (turned and i > 0 and best and best[0].found == 0):
                break
            card = np.ascontiguousarray(located.card[::-1, ::-1]) if turned else located.card
            fields, top, bottom = _read_card(card, ocr)
            reads += 1
            if best is None or fields.found > best[0].found:
                best = (fields, top, bottom, located, turned)
            if best[0].found >= 2:
                break
        if best is not None and best[0].found >= 2:
            break
    assert best is not None
    fields, top, bottom, located, turned = best
    if fields.number is None and fields.name is not None:
        fields, bottom = _second_look(located.card[::-1, ::-1] if turned else located.card,
                                      fields, top, bottom, ocr)
    t2 = time.perf_counter()
    corners = None if located.corners is None else \
        [[round(float(x), 1), round(float(y), 1)] for x, y in located.corners]
    return PhotoReading(fields=fields, top=top, bottom=bottom, corners=corners, turned=turned,
                        timings_ms={"locate": (t1 - t0) * 1000, "ocr": (t2 - t1) * 1000,
                                    "reads": reads})


def read_photo(data: bytes, *, ocr: OcrEngine | None = None) -> PhotoReading:
    """Read a photo's bytes (a stored JPEG, or any format Pillow reads)."""
    t0 = time.perf_counter()
    rgb = decode(data)
    decoded = (time.perf_counter() - t0) * 1000
    reading = read_pixels(rgb, ocr=ocr)
    reading.timings_ms["decode"] = decoded
    return reading
