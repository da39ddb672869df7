"""The local secrets file: KEY=VALUE lines, mode 0600, replaced atomically.

The local cluster keeps one password per database role here
(`$CARDMINT_HOME/secrets.env`); `security rotate` rewrites it. Nothing in this module
ever prints a value.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def role_key(role: str) -> str:
    """The key under which the password of database role `role` is kept."""
    return f"CARDMINT_PASSWORD_{role.upper()}"


def read(path: Path) -> dict[str, str]:
    """All KEY=VALUE pairs of the file; an absent file is empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def write(path: Path, pairs: dict[str, str]) -> None:
    """Replace the file with `pairs`, never leaving a half-written or world-readable file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# CardMint secrets: keep private (mode 0600)\n")
            for key, value in sorted(pairs.items()):
                out.write(f"{key}={value}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
