"""Accepting uploaded photos (cardmint.scan.images) and storing them (cardmint.scan.store):
the limits, EXIF orientation applied, the location and every other metadata gone, the
content address. No database, no OCR."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardmint.scan import images
from cardmint.scan.images import ImageRejected, accept
from cardmint.scan.store import ImageMissing, ImageStore

LIMITS = {"max_bytes": 2_000_000, "max_pixels": 4_000_000}
GPS_IFD = 0x8825
ORIENTATION = 0x0112


def picture(width: int = 300, height: int = 400, fmt: str = "JPEG", **save: object) -> bytes:
    """A picture whose top-left quarter is red: which way up it is can be checked."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def with_exif(orientation: int | None = None, gps: bool = True) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    if orientation:
        exif[ORIENTATION] = orientation
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/"'
           b' exif:GPSLatitude="48,51.48N" exif:GPSLongitude="2,17.67E"/></rdf:RDF>'
           b'</x:xmpmeta>')
    return picture(400, 300, exif=exif, xmp=xmp)


def test_a_photo_is_stored_as_a_clean_jpeg_with_its_digests() -> None:
    data = picture()
    photo = accept(data, **LIMITS)
    assert photo.source_sha256 == hashlib.sha256(data).hexdigest()
    assert photo.sha256 == hashlib.sha256(photo.jpeg).hexdigest()
    assert (photo.width, photo.height, photo.source_format) == (300, 400, "JPEG")
    stored = Image.open(io.BytesIO(photo.jpeg))
    assert stored.format == "JPEG" and stored.mode == "RGB"


def test_exif_location_and_xmp_are_stripped() -> None:
    data = with_exif(gps=True)
    original = Image.open(io.BytesIO(data))
    assert GPS_IFD in original.getexif() and b"GPSLatitude" in data  # the test's premise
    photo = accept(data, **LIMITS)
    stored = Image.open(io.BytesIO(photo.jpeg))
    assert len(stored.getexif()) == 0
    assert "xmp" not in stored.info and "exif" not in stored.info
    for marker in (b"Exif", b"GPS", b"PhoneMaker", b"xmpmeta", b"48,51"):
        assert marker not in photo.jpeg


@pytest.mark.parametrize("orientation, size", [(6, (300, 400)), (8, (300, 400)),
                                               (3, (400, 300)), (1, (400, 300))])
def test_exif_orientation_is_applied_to_the_pixels(orientation: int,
                                                   size: tuple[int, int]) -> None:
    """A phone stores a portrait photo sideways with orientation 6 or 8: stored upright."""
    photo = accept(with_exif(orientation=orientation, gps=False), **LIMITS)
    stored = Image.open(io.BytesIO(photo.jpeg)).convert("RGB")
    assert stored.size == size == (photo.width, photo.height)
    w, h = stored.size
    # where the red quarter went: 6 turns it to the top right, 8 to the bottom left
    red = {(x, y) for x, y in ((w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4),
                               (3 * w // 4, 3 * h // 4))
           if stored.getpixel((x, y))[1] < 80}
    expected = {1: (w // 4, h // 4), 6: (3 * w // 4, h // 4), 8: (w // 4, 3 * h // 4),
                3: (3 * w // 4, 3 * h // 4)}[orientation]
    assert red == {expected}


def test_png_with_transparency_and_webp_are_taken() -> None:
    rgba = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    png = accept(out.getvalue(), **LIMITS)
    assert Image.open(io.BytesIO(png.jpeg)).getpixel((10, 10)) > (240, 240, 240)  # on white
    webp = accept(picture(fmt="WEBP"), **LIMITS)
    assert webp.source_format == "WEBP"
    grey16 = io.BytesIO()  # a 16-bit scan: mid-grey stays mid-grey, not clipped to white
    Image.fromarray(np.full((300, 300), 32768, dtype=np.uint16)).save(grey16, "PNG")
    level = Image.open(io.BytesIO(accept(grey16.getvalue(), **LIMITS).jpeg)).getpixel((9, 9))
    assert 120 <= level[0] <= 135


@pytest.mark.parametrize("data, status, words", [
    (b"", 422, "empty"),
    (b"GIF89a" + b"\0" * 100, 415, "JPEG, PNG or WebP"),
    (b"%PDF-1.7\n" + b"\0" * 100, 415, "JPEG, PNG or WebP"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 200, 422, "cannot be read"),
    (picture()[:600], 422, "cannot be read"),
    (picture(150, 150), 422, "200 pixels"),
    (picture(2500, 2000), 422, "pixels; the limit"),
])
def test_bad_uploads_are_refused_naming_the_problem(data: bytes, status: int,
                                                    words: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        accept(data, **LIMITS)
    assert caught.value.status == status and caught.value.field == "image"
    assert words in str(caught.value)


def test_size_limit_is_checked_first() -> None:
    with pytest.raises(ImageRejected) as caught:
        accept(b"\xff\xd8\xff" + b"\0" * 3000, max_bytes=2000, max_pixels=10**6)
    assert caught.value.status == 413 and "limit is 2,000" in str(caught.value)


def test_a_pixel_bomb_is_refused_before_decoding() -> None:
    """A small PNG that claims a huge canvas: refused from its header."""
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, "PNG")
    assert len(out.getvalue()) < 100_000
    with pytest.raises(ImageRejected) as caught:
        accept(out.getvalue(), max_bytes=10**6, max_pixels=images.MIN_SIDE ** 2 * 100)
    assert "pixels; the limit" in str(caught.value)


def test_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    sha = store.put(b"photo bytes")
    assert sha == hashlib.sha256(b"photo bytes").hexdigest()
    path = store.path(sha)
    assert path == tmp_path / "images" / sha[:2] / sha[2:4] / f"{sha}.jpg"
    assert store.get(sha) == b"photo bytes" and store.has(sha)
    assert store.put(b"photo bytes") == sha  # the same photo is one file
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    with pytest.raises(ImageMissing):
        store.get("0" * 64)
    with pytest.raises(ImageMissing):
        store.get("../../etc/passwd")
    assert not store.has("not-a-digest")
