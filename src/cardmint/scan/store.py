"""Photos on disk, content-addressed: a photo's name is the SHA-256 of its bytes.

`$CARDMINT_IMAGE_DIR` (default `$CARDMINT_HOME/images`; a volume in production) holds
`ab/cd/abcd….jpg`. The same photo stored twice is one file; a file is written under a
temporary name, flushed and renamed, so a reader never sees half a photo and a crash leaves
no torn file. Nothing is ever rewritten: a name always means the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from cardmint.config import Settings
from cardmint.errors import CardmintError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
REF_PREFIX = "sha256:"  # captures.image_ref of a stored photo


class ImageMissing(CardmintError):
    """No stored photo has this address (deleted from the volume, or never stored)."""


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageStore:
        return cls(settings.images_path)

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError("not a SHA-256 in hex")
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}.jpg"

    def put(self, data: bytes) -> str:
        """Store `data`; returns its address. A photo already there is not written again."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except (FileNotFoundError, ValueError):
            raise ImageMissing(f"no stored photo {sha256[:16]}…") from None

    def has(self, sha256: str) -> bool:
        try:
            return self.path(sha256).exists()
        except ValueError:
            return False


def ref(sha256: str) -> str:
    return REF_PREFIX + sha256
