"""Captures from photos: an upload accepted, stored and queued; the worker's OCR step.

`store` checks and cleans the photo (`cardmint.scan.images`) and stores it content-addressed
(`cardmint.scan.store`) before the capture row exists (a capture never names a photo that is
not there; a photo whose row failed is just an unreferenced file, reused if sent again);
`create` makes the capture with its job in one transaction; `submit` does both. `read` runs
OCR on a capture's photo in a thread, so the server's event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cardmint.catalog.identify import OcrInput
from cardmint.config import Settings
from cardmint.intake import captures, queue, stock
from cardmint.intake.tx import Executor
from cardmint.scan import images
from cardmint.scan.store import ImageStore, ref

if TYPE_CHECKING:  # cardmint.scan.read pulls in OpenCV and numpy: imported where OCR runs
    from cardmint.scan.read import PhotoReading


async def store(data: bytes, settings: Settings) -> images.Photo:
    """The photo `data` checked, cleaned and stored; ImageRejected (a ValidationError naming
    `image`, with the HTTP status to answer) if it is not one we accept. CPU and disk work in
    a thread; no database involved, so callers do it before opening a transaction."""
    photo = await asyncio.to_thread(images.accept, data, max_bytes=settings.image_max_bytes,
                                    max_pixels=settings.image_max_pixels)
    await asyncio.to_thread(ImageStore.from_settings(settings).put, photo.jpeg)
    return photo


async def create(ex: Executor, photo: images.Photo, *, submitter: str,
                 condition: str = stock.DEFAULT_CONDITION,
                 language: str = stock.DEFAULT_LANGUAGE, location: str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 priority: int = queue.DEFAULT_PRIORITY) -> dict[str, Any]:
    """A queued capture (and its job) for a stored photo."""
    new = captures.NewCapture(
        image_ref=ref(photo.sha256), ocr=OcrInput(), condition=condition, language=language,
        location=location, metadata=dict(metadata or {}), priority=priority,
        image_sha256=photo.sha256, source_sha256=photo.source_sha256)
    return await captures.create(ex, new, submitter=submitter)


async def submit(ex: Executor, data: bytes, *, settings: Settings, submitter: str,
                 condition: str = stock.DEFAULT_CONDITION,
                 language: str = stock.DEFAULT_LANGUAGE, location: str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 priority: int = queue.DEFAULT_PRIORITY) -> dict[str, Any]:
    """`store` then `create`: a queued capture for the photo `data`."""
    captures.check_item_fields(condition, language)
    photo = await store(data, settings)
    return await create(ex, photo, submitter=submitter, condition=condition,
                        language=language, location=location, metadata=metadata,
                        priority=priority)


async def seen(ex: Executor, source_digests: Sequence[str]) -> set[str]:
    """Which of these upload digests some capture already has (ix_captures_source_sha256)."""
    rows = await ex.fetch("SELECT DISTINCT source_sha256 FROM captures "
                          "WHERE source_sha256 = ANY($1::text[])", list(source_digests))
    return {r["source_sha256"] for r in rows}


async def read(settings: Settings, image_sha256: str) -> PhotoReading:
    """OCR of a stored photo (ImageMissing if the store no longer has it)."""
    from cardmint.scan.ocr import engine
    from cardmint.scan.read import read_photo

    data = await asyncio.to_thread(ImageStore.from_settings(settings).get, image_sha256)
    ocr = await asyncio.to_thread(engine, settings.ocr_threads)
    return await asyncio.to_thread(read_photo, data, ocr=ocr)


def photo(settings: Settings, image_sha256: str) -> bytes:
    """A stored photo's bytes (ImageMissing if absent)."""
    return ImageStore.from_settings(settings).get(image_sha256)
