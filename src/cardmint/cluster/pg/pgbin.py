"""Finding PostgreSQL's server binaries.

Order: `CARDMINT_PG_BINDIR`, `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`,
then the binaries bundled by the `pgserver` package. A directory counts only if it has
every program the local cluster runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cardmint import inputs
from cardmint.errors import ClusterError

REQUIRED = ("initdb", "postgres", "pg_basebackup", "pg_ctl", "psql")


@dataclass(frozen=True)
class PgBin:
    bindir: Path
    version: str  # e.g. "15.19"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def __call__(self, program: str) -> str:
        return str(self.bindir / program)


def _complete(bindir: Path) -> bool:
    return all((bindir / p).is_file() for p in REQUIRED)


def _candidates(configured: Path | None) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if configured is not None:
        found.append(("CARDMINT_PG_BINDIR", configured))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            found.append(("pg_config --bindir", Path(out)))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if inputs.is_digits(p.parent.name) else 0,
        reverse=True,
    )
    found.extend(("/usr/lib/postgresql", p) for p in versions)
    try:
        import pgserver  # type: ignore[import-not-found]  # optional fallback

        found.append(("pgserver", Path(pgserver.__file__).parent / "pginstall" / "bin"))
    except ImportError:
        pass
    return found


def find(configured: Path | None = None) -> PgBin:
    """The first complete set of server binaries, or a ClusterError saying what was tried."""
    tried = []
    for source, bindir in _candidates(configured):
        if _complete(bindir):
            return PgBin(bindir, _version(bindir))
        missing = [p for p in REQUIRED if not (bindir / p).is_file()]
        tried.append(f"{source}: {bindir} (missing {', '.join(missing)})")
        if source == "CARDMINT_PG_BINDIR":
            raise ClusterError(f"CARDMINT_PG_BINDIR={bindir} lacks {', '.join(missing)}")
    raise ClusterError(
        "no PostgreSQL server binaries found; install them (Debian: apt-get install "
        "postgresql-15) or set CARDMINT_PG_BINDIR. Tried: " + ("; ".join(tried) or "nothing")
    )


def _version(bindir: Path) -> str:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        raise ClusterError(f"cannot read the version of {bindir / 'postgres'}: {out!r}")
    return f"{match.group(1)}.{match.group(2) or 0}"
