"""Secrets at rest under the cluster's home: every secret store (`cluster.home.SECRET_STORES`:
the passwords file, replicas' and Patroni's password files and configurations, PgBouncer's
verifiers, TLS keys) mode 0600; backups (every row, every verifier) closed to others; and
the servers' start-up logs free of passwords."""

from __future__ import annotations

import stat
from pathlib import Path

from cardmint.cluster.home import secret_stores
from cardmint.ops.security.audit.finding import Finding
from cardmint.ops.security.audit.node import LOG_TAIL_BYTES, password_findings


def file_findings(home: Path) -> list[Finding]:
    if not home.is_dir():
        return []  # a cluster reached by DSN only (Fly, hosts of your own)
    out = []
    for path in secret_stores(home):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            out.append(Finding("secret_file_mode", "P1", f"file {path.relative_to(home)}",
                               f"holds a secret and is mode {mode:04o}: others may read it",
                               f"chmod 600 {path}"))
    backups = home / "backups"
    if backups.is_dir():
        mode = stat.S_IMODE(backups.stat().st_mode)
        if mode & 0o077:
            out.append(Finding("backups_readable", "P1", "directory backups/",
                               f"mode {mode:04o}: others may read the backups, every row and "
                               "every password verifier", f"chmod 700 {backups}"))
    return out


def start_up_log_findings(home: Path, known: dict[str, str]) -> list[Finding]:
    """The servers' own output before their log collector starts (`logs/` of the home)."""
    logs = home / "logs"
    texts = []
    for path in sorted(logs.rglob("*")) if logs.is_dir() else []:
        if path.is_file():
            with open(path, "rb") as data:
                size = path.stat().st_size
                data.seek(max(0, size - LOG_TAIL_BYTES))
                texts.append((f"file {path.relative_to(home)}", data.read()))
    return password_findings(texts, known, "", "log")
