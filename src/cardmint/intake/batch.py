"""A folder of scans into the intake: every photo queued once, then followed until read.

Resumable: a file is recognised by the SHA-256 of its bytes (`captures.source_sha256`,
indexed), so after an interruption the same command skips what was already sent and goes
on with the rest; captures of earlier runs still waiting are followed too. Files are taken
in name order; those that are not photos we accept are reported, not fatal.

`follow` processes the queue in this process (an intake worker, as `cardmint worker`
runs) until every capture of the folder is processed, in review or failed; a `cardmint
serve` running meanwhile shares the work (jobs are claimed with SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardmint.config import Settings
from cardmint.db import Database
from cardmint.errors import UsageError
from cardmint.intake import photos
from cardmint.intake.worker import Worker
from cardmint.scan.images import ImageRejected

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DONE = ("processed", "needs_review", "failed", "discarded")


@dataclass
class FileResult:
    name: str  # relative to the folder
    status: str  # queued, skipped (sent before), refused
    sha256: str  # of the file's bytes
    capture_id: int | None = None
    message: str | None = None


@dataclass
class FolderReport:
    folder: str
    files: list[FileResult] = field(default_factory=list)
    captures: dict[int, dict[str, Any]] = field(default_factory=dict)  # id: outcome

    @property
    def digests(self) -> list[str]:
        """Of the files that have a capture (this run's or an earlier one's)."""
        return [f.sha256 for f in self.files if f.status != "refused"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.status] = out.get(f.status, 0) + 1
        for c in self.captures.values():
            key = c["status"] if c["status"] in DONE else "pending"
            out[key] = out.get(key, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "counts": self.counts(),
                "files": [f.__dict__ for f in self.files],
                "captures": [{"id": k, **v} for k, v in sorted(self.captures.items())]}


def photo_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The photos in `folder` (by suffix), in name order; hidden files skipped."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a directory")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


async def send(db: Database, folder: Path, files: Sequence[Path], *, settings: Settings,
               submitter: str, condition: str, language: str, location: str | None,
               step: Callable[[FileResult], None] = lambda _: None) -> FolderReport:
    """Queue every file not sent before; `step` is told of each file as it is done."""
    report = FolderReport(str(folder))
    for path in files:
        name = str(path.relative_to(folder))
        data = await asyncio.to_thread(path.read_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if await photos.seen(db, [digest]):
            result = FileResult(name, "skipped", digest, message="sent before")
        else:
            try:
                capture = await photos.submit(
                    db, data, settings=settings, submitter=submitter, condition=condition,
                    language=language, location=location,
                    metadata={"source": "scan", "file": name[:500]})
                result = FileResult(name, "queued", digest, capture["id"])
            except ImageRejected as exc:
                result = FileResult(name, "refused", digest, message=str(exc))
        report.files.append(result)
        step(result)
    return report


STATUS_SQL = """
SELECT DISTINCT ON (source_sha256) id, status, card_id, ocr -> 'item' ->> 'item_id' AS item_id,
       source_sha256
FROM captures WHERE source_sha256 = ANY($1::text[])
ORDER BY source_sha256, id DESC
"""


async def statuses(db: Database, digests: Sequence[str]) -> dict[int, dict[str, Any]]:
    rows = await db.fetch(STATUS_SQL, list(digests))
    return {r["id"]: {"status": r["status"], "card_id": r["card_id"],
                      "item_id": int(r["item_id"]) if r["item_id"] else None} for r in rows}


async def follow(db: Database, report: FolderReport, *,
                 timeout_s: float = 3600.0, worker: Worker | None = None,
                 step: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Process the queue here until every capture of these files is done (or `timeout_s`
    passes: the rest stays queued for any worker); `step(done, total)` after each round."""
    worker = worker or Worker(db, name="cardmint-scan", listen=False)
    deadline = time.monotonic() + timeout_s
    while True:
        report.captures = await statuses(db, report.digests)
        done = sum(c["status"] in DONE for c in report.captures.values())
        step(done, len(report.captures))
        if done == len(report.captures) or time.monotonic() > deadline:
            return
        if await worker.run_once(limit=1) == 0:
            await asyncio.sleep(0.5)  # held by another worker, or waiting out a retry
