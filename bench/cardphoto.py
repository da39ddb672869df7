"""Synthetic card photos: card faces rendered from the catalog's real data, then photographed
synthetically (perspective, rotation, blur, noise, glare, JPEG quality, low light, a
background around the card).

No photo set can be downloaded on this machine, so the scan evaluation (`bench/scan.py`)
and the scan tests build their own. A face carries what a real card prints where OCR has to
find it: the stage line, the name, HP, the attacks and abilities with their text, weakness
and retreat, the illustrator line, the number and printed total, and (from 2023 on) the
regulation mark and set code beside the number, plus a copyright line. The layout is ours,
not the real one (no artwork, our own fonts: Debian's DejaVu and Liberation), so the set
tests the pipeline's geometry and reading, not the real card design.

    face = render_face(card, rng)                    # 630 x 880 px, a card at 10 px/mm
    jpeg = photograph(face, "perspective", rng)      # a phone-like photo, JPEG bytes

`cards_from_catalog()` reads the bundled catalog files (no database needed).
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from cardmint.catalog.load import read_card_lines, read_sets_json

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
# (regular, bold) pairs; Debian's fonts-dejavu-core and fonts-liberation (`make fonts`)
FONT_PAIRS = (("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
              ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
              ("LiberationSansNarrow-Regular.ttf", "LiberationSansNarrow-Bold.ttf"))
W, H = 630, 880  # 63 x 88 mm
CODE_SINCE = "2023-01-01"  # set code and regulation mark printed beside the number
PROMO_SETS = {"basep", "np", "dpp", "hgssp", "bwp", "xyp", "smp", "swshp", "svp", "mep"}

DEGRADATIONS = ("scan", "table", "perspective", "rotation", "blur", "noise", "glare", "jpeg",
                "low_light", "clutter", "mixed")
PHOTO_SIZE = (1200, 1600)  # portrait, like a phone photo scaled down by the phone's browser

TYPE_COLOURS = {"Fire": (240, 150, 110), "Water": (140, 185, 235), "Grass": (160, 210, 130),
                "Lightning": (250, 225, 110), "Psychic": (205, 160, 215),
                "Fighting": (215, 165, 120), "Darkness": (150, 150, 165),
                "Metal": (190, 195, 205), "Dragon": (210, 190, 120), "Fairy": (240, 180, 210),
                "Colorless": (225, 225, 220)}


def missing_fonts() -> list[str]:
    """Font files this module needs that are not installed (`make fonts` installs them)."""
    return [name for pair in FONT_PAIRS for name in pair if _font_path(name) is None]


def _font_path(name: str) -> Path | None:
    return next((d / name for d in FONT_DIRS if (d / name).exists()), None)


_FONTS: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    key = (name, size)
    if key not in _FONTS:
        path = _font_path(name)
        if path is None:
            raise FileNotFoundError(f"font {name} is not installed (make fonts)")
        _FONTS[key] = ImageFont.truetype(str(path), size)
    return _FONTS[key]


# -- the catalog ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CardData:
    id: str
    name: str
    category: str
    local_id: str
    set_id: str
    printed_total: int | None
    abbreviation: str | None
    release_date: str
    hp: int | None
    stage: str | None
    types: tuple[str, ...]
    evolve_from: str | None
    illustrator: str | None
    regulation_mark: str | None
    attacks: tuple[dict[str, Any], ...]
    abilities: tuple[dict[str, Any], ...]
    weakness: str | None
    retreat: int | None
    dex: int | None

    @property
    def number(self) -> str:
        """As printed: 4/102, TG05/TG30, SV001/SV122; promos and totalless sets: the id."""
        if self.set_id in PROMO_SETS or not self.printed_total:
            return self.local_id
        prefix = "".join(ch for ch in self.local_id[:4] if ch.isalpha() and ch.isupper())
        if prefix and self.local_id.startswith(prefix):
            return f"{self.local_id}/{prefix}{self.printed_total}"
        return f"{self.local_id}/{self.printed_total}"

    @property
    def set_code(self) -> str | None:
        if self.abbreviation and self.release_date >= CODE_SINCE:
            return self.abbreviation.split(":")[0]
        return None


def cards_from_catalog(sample: bool = False) -> list[CardData]:
    """Every card of the bundled catalog (or its sample), with what a face prints."""
    sets = {s["id"]: s for s in json.loads(read_sets_json())}
    out = []
    for line in read_card_lines(sample=sample):
        c = json.loads(line)
        s = sets.get(c["set_id"], {})
        weak = c.get("weaknesses") or []
        out.append(CardData(
            id=c["id"], name=c["name"], category=c["category"], local_id=c["local_id"],
            set_id=c["set_id"], printed_total=s.get("printed_total"),
            abbreviation=s.get("abbreviation"), release_date=s.get("release_date") or "",
            hp=c.get("hp"), stage=c.get("stage"), types=tuple(c.get("types") or ()),
            evolve_from=c.get("evolve_from"), illustrator=c.get("illustrator"),
            regulation_mark=c.get("regulation_mark"),
            attacks=tuple(c.get("attacks") or ()), abilities=tuple(c.get("abilities") or ()),
            weakness=f"{weak[0]['type']} {weak[0].get('value') or ''}".strip() if weak else None,
            retreat=c.get("retreat"), dex=(c.get("dex_ids") or [None])[0]))
    return out


# -- the face ---------------------------------------------------------------------------------

def _fit(draw: ImageDraw.ImageDraw, text: str, font_name: str, size: int,
         width: int) -> ImageFont.FreeTypeFont:
    """The font at `size`, smaller until `text` fits in `width`."""
    while size > 10:
        font = _font(font_name, size)
        if draw.textlength(text, font=font) <= width:
            return font
        size -= 2
    return _font(font_name, size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont,
          width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def _art(img: Image.Image, box: tuple[int, int, int, int], rng: random.Random) -> None:
    """Procedural 'artwork': a gradient and shapes, colourful and without text."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a = np.array([rng.randrange(60, 255) for _ in range(3)], dtype=np.float32)
    b = np.array([rng.randrange(0, 200) for _ in range(3)], dtype=np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    grad = (a * (1 - t) + b * t).repeat(w, axis=1)
    art = Image.fromarray(grad.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(art)
    for _ in range(rng.randrange(4, 10)):
        cx, cy, r = rng.randrange(w), rng.randrange(h), rng.randrange(15, 90)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            d.polygon([(cx + rng.randrange(-r, r), cy + rng.randrange(-r, r)) for _ in range(5)],
                      fill=colour)
    img.paste(art.filter(ImageFilter.GaussianBlur(1.5)), (x0, y0))


def render_face(card: CardData, rng: random.Random) -> Image.Image:
    """The card's face, 630 x 880 px, in one of the fonts (chosen by `rng`)."""
    regular, bold = rng.choice([p for p in FONT_PAIRS if _font_path(p[0]) and _font_path(p[1])]
                               or [FONT_PAIRS[0]])
    modern = card.release_date >= CODE_SINCE
    border = (205, 205, 210) if modern else (240, 205, 70)
    img = Image.new("RGB", (W, H), border)
    d = ImageDraw.Draw(img)
    panel = TYPE_COLOURS.get(card.types[0] if card.types else "", (232, 228, 215))
    if card.category != "Pokemon":
        panel = (225, 225, 230) if card.category == "Trainer" else (235, 230, 200)
    d.rounded_rectangle((20, 20, W - 20, H - 20), radius=14, fill=panel)
    ink, muted = (20, 20, 24), (70, 70, 80)

    stage = {"Basic": "BASIC", "Stage1": "STAGE 1", "Stage2": "STAGE 2"}.get(
        card.stage or "", (card.stage or "").upper())
    top_line = stage if card.category == "Pokemon" else card.category.upper()
    d.text((38, 28), top_line, font=_font(bold, 15), fill=muted)

    hp_text = ""
    if card.category == "Pokemon" and card.hp:
        hp_text = rng.choice((f"HP {card.hp}", f"HP{card.hp}")) if card.release_date >= "2011" \
            else f"{card.hp} HP"
    hp_font = _font(bold, 34)
    hp_w = int(d.textlength(hp_text, font=hp_font)) if hp_text else 0
    name_font = _fit(d, card.name, bold, 38, W - 80 - hp_w - 60)
    d.text((38, 48), card.name, font=name_font, fill=ink)
    if hp_text:
        d.text((W - 80 - hp_w, 52), hp_text, font=hp_font, fill=(170, 30, 30))
        d.ellipse((W - 70, 56, W - 40, 86), fill=tuple(max(0, c - 60) for c in panel))

    _art(img, (45, 100, W - 45, 470), rng)
    d.rectangle((45, 100, W - 45, 470), outline=(120, 110, 90), width=3)
    small = _font(regular, 13)
    flavour = []
    if card.dex:
        flavour.append(f"NO. {card.dex:04d}")
    if card.evolve_from:
        flavour.append(f"Evolves from {card.evolve_from}")
    if flavour:
        d.text((60, 478), "   ".join(flavour), font=small, fill=muted)

    y = 510
    body, label = _font(regular, 15), _font(bold, 21)
    for ability in card.abilities[:1]:
        d.text((40, y), "Ability", font=_font(bold, 15), fill=(190, 40, 40))
        d.text((110, y - 4), ability.get("name") or "", font=label, fill=ink)
        y += 30
        for line in _wrap(d, ability.get("effect") or "", body, W - 90)[:3]:
            d.text((45, y), line, font=body, fill=ink)
            y += 19
        y += 8
    for attack in card.attacks[:2]:
        if y > 690:
            break
        for i, _ in enumerate((attack.get("cost") or [])[:4]):
            d.ellipse((40 + 24 * i, y + 2, 60 + 24 * i, y + 22), fill=(90, 90, 95))
        x = 40 + 24 * min(4, len(attack.get("cost") or [])) + 10
        d.text((x, y - 2), attack.get("name") or "", font=label, fill=ink)
        if attack.get("damage"):
            damage = str(attack["damage"])
            dw = d.textlength(damage, font=label)
            d.text((W - 45 - dw, y - 2), damage, font=label, fill=ink)
        y += 30
        for line in _wrap(d, attack.get("effect") or "", body, W - 90)[:3]:
            d.text((45, y), line, font=body, fill=ink)
            y += 19
        y += 10
    if card.category != "Pokemon":
        d.text((45, y), f"{card.category} card", font=body, fill=muted)

    if card.category == "Pokemon":
        bottom = []
        if card.weakness:
            bottom.append(f"weakness {card.weakness}")
        bottom.append("resistance")
        if card.retreat is not None:
            bottom.append(f"retreat {card.retreat}")
        d.text((45, 752), "     ".join(bottom), font=_font(regular, 14), fill=muted)

    foot = _font(regular, 14)
    number_font = _font(bold, 17)
    if card.illustrator:
        d.text((38, 800), f"Illus. {card.illustrator}", font=foot, fill=ink)
    if modern:
        x = 38
        if card.regulation_mark:
            d.rectangle((x, 830, x + 20, 852), outline=ink, width=2)
            d.text((x + 5, 832), card.regulation_mark, font=_font(bold, 15), fill=ink)
            x += 30
        code = f"{card.set_code} EN  " if card.set_code else ""
        d.text((x, 831), f"{code}{card.number}", font=number_font, fill=ink)
    else:
        nw = d.textlength(card.number, font=number_font)
        d.text((W - 48 - nw, 826), card.number, font=number_font, fill=ink)
    year = card.release_date[:4] or "1999"
    d.text((W - 260 if modern else 38, 852 if modern else 836),
           f"©{year} Pokémon / Nintendo / Creatures", font=_font(regular, 10), fill=muted)
    return img


# -- the photo --------------------------------------------------------------------------------

def _background(size: tuple[int, int], rng: random.Random, busy: bool) -> np.ndarray:
    w, h = size
    base = np.array([rng.randrange(60, 200) for _ in range(3)], dtype=np.float32)
    if not busy:  # a table: a plain colour with a little grain and a light falloff
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        falloff = 1.0 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
        img = base[None, None, :] * falloff[:, :, None]
        grain = np.random.default_rng(rng.randrange(2**32)).normal(0, 4, (h, w, 1))
        return np.clip(img + grain, 0, 255).astype(np.uint8)
    canvas = Image.new("RGB", size, tuple(int(c) for c in base))
    d = ImageDraw.Draw(canvas)
    for _ in range(40):  # other objects on the table: boxes, sleeves, cards' backs
        x, y = rng.randrange(-100, w), rng.randrange(-100, h)
        bw, bh = rng.randrange(60, 500), rng.randrange(60, 500)
        d.rectangle((x, y, x + bw, y + bh), fill=tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(30):
        x, y = rng.randrange(w), rng.randrange(h)
        d.line((x, y, x + rng.randrange(-300, 300), y + rng.randrange(-300, 300)),
               fill=tuple(rng.randrange(256) for _ in range(3)), width=rng.randrange(2, 12))
    return np.asarray(canvas.filter(ImageFilter.GaussianBlur(2)))


def _place(face: Image.Image, photo: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The face warped onto `corners` (tl, tr, br, bl) of the photo, with a soft shadow."""
    h, w = photo.shape[:2]
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, corners.astype(np.float32))
    warped = cv2.warpPerspective(np.asarray(face), matrix, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((H, W), 255, np.uint8), matrix, (w, h))
    shadow = cv2.GaussianBlur(cv2.warpPerspective(
        np.full((H, W), 255, np.uint8), matrix, (w, h),
        borderValue=0)[:, :], (0, 0), 12)
    shadow = np.roll(shadow, (10, 8), axis=(0, 1)).astype(np.float32) / 255 * 0.45
    out = photo.astype(np.float32) * (1 - shadow[:, :, None])
    alpha = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[:, :, None] / 255
    out = out * (1 - alpha) + warped.astype(np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _corners(size: tuple[int, int], scale: float, angle_deg: float, tilt: float,
             rng: random.Random) -> np.ndarray:
    """Where the card's corners land: scaled to `scale` of the photo's height, rotated,
    and pulled by up to `tilt` of its size for perspective."""
    w, h = size
    ch = h * scale
    cw = ch * W / H
    pts = np.array([[-cw / 2, -ch / 2], [cw / 2, -ch / 2], [cw / 2, ch / 2], [-cw / 2, ch / 2]])
    pts += np.array([[rng.uniform(-tilt, tilt) * cw, rng.uniform(-tilt, tilt) * ch]
                     for _ in range(4)])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = pts @ rot.T
    span_x = max(0.0, w / 2 - np.abs(pts[:, 0]).max() - 10)
    span_y = max(0.0, h / 2 - np.abs(pts[:, 1]).max() - 10)
    centre = np.array([w / 2 + rng.uniform(-span_x, span_x), h / 2 + rng.uniform(-span_y, span_y)])
    return pts + centre


def photograph(face: Image.Image, kind: str, rng: random.Random, *,
               size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A JPEG of the face photographed under one degradation (see DEGRADATIONS); `mixed`
    combines three of the others."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}")
    effects = {kind}
    if kind == "mixed":
        effects = set(rng.sample(("perspective", "rotation", "blur", "noise", "glare", "jpeg",
                                  "low_light", "clutter"), 3))
    if "scan" in effects:  # a flatbed: the card fills the frame, square, on the lid's white
        w, h = round(W * 1.08), round(H * 1.06)
        photo = np.full((h, w, 3), 248, np.uint8)
        corners = _corners((w, h), 1 / 1.06, rng.uniform(-1, 1), 0, rng)
        return _jpeg(Image.fromarray(_place(face, photo, corners)), 92)
    scale = rng.uniform(0.62, 0.8)
    angle = rng.uniform(-4, 4)
    tilt = 0.02
    if "rotation" in effects:
        angle = rng.choice((-1, 1)) * rng.uniform(8, 30)
        scale = min(scale, 0.7)
    if "perspective" in effects:
        tilt = rng.uniform(0.06, 0.1)
    if "clutter" in effects:
        scale = rng.uniform(0.45, 0.6)
    photo = _background(size, rng, busy="clutter" in effects)
    img = _place(face, photo, _corners(size, scale, angle, tilt, rng)).astype(np.float32)
    noise_rng = np.random.default_rng(rng.randrange(2**32))
    if "glare" in effects:  # a lamp's reflection: a bright, soft ellipse over part of the card
        h, w = img.shape[:2]
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.25, 0.75) * h
        rx, ry = rng.uniform(0.12, 0.25) * w, rng.uniform(0.08, 0.18) * h
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        glow = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
        img = img + glow[:, :, None] * rng.uniform(120, 200)
    if "low_light" in effects:
        img = 255 * (img / 255) ** 1.3 * rng.uniform(0.3, 0.45)
        img = img + noise_rng.normal(0, 5, img.shape)
    if "noise" in effects:
        img = img + noise_rng.normal(0, rng.uniform(12, 22), img.shape)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if "blur" in effects:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(1.8, 3.0)))
    quality = rng.randrange(12, 25) if "jpeg" in effects else 88
    return _jpeg(out, quality)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def sample_cards(cards: Sequence[CardData], n: int, rng: random.Random) -> list[CardData]:
    """`n` cards drawn without replacement (all if fewer)."""
    return rng.sample(list(cards), min(n, len(cards)))


def write_folder(folder: Path, cards: Sequence[CardData], kind: str, seed: int) -> dict[str, str]:
    """Photos of `cards` under one degradation in `folder` (NNN-cardid.jpg); returns
    {file name: card id}."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, card in enumerate(cards):
        rng = random.Random(f"{seed}-{card.id}-{kind}")
        name = f"{i:03d}-{card.id}.jpg"
        (folder / name).write_bytes(photograph(render_face(card, rng), kind, rng))
        truth[name] = card.id
    return truth


if __name__ == "__main__":  # python -m bench.cardphoto OUT_DIR [N]: a folder to look at
    import sys

    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    rng = random.Random(7)
    chosen = sample_cards(cards_from_catalog(), n, rng)
    for kind in DEGRADATIONS:
        write_folder(out / kind, chosen, kind, 7)
    print(f"{n * len(DEGRADATIONS)} photos under {out}")
