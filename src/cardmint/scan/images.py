"""Accepting an uploaded photo: what we store is always an upright JPEG with no metadata.

Limits, checked before any pixel is decoded: the upload's size (`image_max_bytes`), its
format (JPEG, PNG or WebP, by content, not by the name or the client's content type), its
pixel count (`image_max_pixels`, so a small file cannot expand into gigabytes) and a smallest
side below which no card can be read. Then the EXIF orientation is applied to the pixels (a
phone stores a portrait photo sideways and says so in EXIF) and the photo is encoded again as
a JPEG without EXIF or XMP: the location a phone writes there never reaches the store.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from cardmint.errors import ValidationError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
CONTENT_TYPES = frozenset(FORMATS.values())
MIN_SIDE = 200  # px: a card smaller than this in a photo cannot be read
JPEG_QUALITY = 90


class ImageRejected(ValidationError):
    """An upload that is not a photo we accept; `status` is the HTTP answer (413, 415, 422)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message, field="image")
        self.status = status


@dataclass(frozen=True)
class Photo:
    """A photo as stored: upright, JPEG, no metadata."""

    jpeg: bytes
    width: int
    height: int
    sha256: str  # of `jpeg`: its address in the store
    source_sha256: str  # of the bytes as uploaded: the same file sent again is recognised
    source_format: str  # JPEG, PNG or WEBP


def sniff(data: bytes) -> str | None:
    """The format the first bytes announce, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def accept(data: bytes, *, max_bytes: int, max_pixels: int) -> Photo:
    """The upload checked and normalised, or ImageRejected saying what is wrong with it."""
    if len(data) > max_bytes:
        raise ImageRejected(f"the image is {len(data):,} bytes; the limit is {max_bytes:,}",
                            status=413)
    if not data:
        raise ImageRejected("the image is empty")
    kind = sniff(data)
    if kind is None:
        raise ImageRejected("the image must be a JPEG, PNG or WebP file", status=415)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[kind])
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageRejected(f"the image has {width} x {height} pixels; the limit is "
                                    f"{max_pixels:,} pixels")
            if min(width, height) < MIN_SIDE:
                raise ImageRejected(f"the image is {width} x {height} pixels; a card cannot "
                                    f"be read below {MIN_SIDE} pixels a side")
            img.load()
            upright = ImageOps.exif_transpose(img)
            jpeg = _encode(upright)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fires on opening past ~90 M pixels, before our check can
        raise ImageRejected(f"the image has too many pixels; the limit is {max_pixels:,} "
                            "pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"the {kind} image cannot be read: {type(exc).__name__}") from None
    return Photo(jpeg=jpeg, width=upright.width, height=upright.height,
                 sha256=hashlib.sha256(jpeg).hexdigest(),
                 source_sha256=hashlib.sha256(data).hexdigest(), source_format=kind)


def _encode(img: Image.Image) -> bytes:
    """RGB JPEG with nothing but pixels (and the colour profile): no EXIF, no XMP, no
    comments. A transparent PNG is laid on white first."""
    icc = img.info.get("icc_profile")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    elif img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float scans
        import numpy as np

        wide = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or float(wide.max()) > 255 else 255.0
        img = Image.fromarray(np.clip(wide * (255.0 / top), 0, 255).astype(np.uint8), "L")
        img = img.convert("RGB")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    clean = Image.frombytes("RGB", img.size, img.tobytes())  # a new image: no info carried
    out = io.BytesIO()
    clean.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False,
               **({"icc_profile": icc} if isinstance(icc, bytes) else {}))
    return out.getvalue()
