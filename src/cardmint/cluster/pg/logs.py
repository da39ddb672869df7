"""The local cluster's server logs: PostgreSQL's jsonlog files, one JSON object a line, in
each node's `<datadir>/log/<node>-*.json` (rotated by size and age; see nodes.COMMON_CONF).

Read by `cardmint cluster logs` (the runbook's `flyctl logs | grep ERROR`) and by `stats`
(errors in the last hour by SQLSTATE). Messages and statements are redacted on the way out:
a failed statement is logged with its text, which may hold a DSN.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cardmint.cluster.engine import LogQuery, LogReport
from cardmint.cluster.state import ClusterState, Node
from cardmint.dsn import redact
from cardmint.errors import UsageError

ERROR_LEVELS = ("ERROR", "FATAL", "PANIC")
FOLLOW_INTERVAL_S = 0.25
KEPT = ("timestamp", "error_severity", "state_code", "message", "detail", "hint", "statement",
        "user", "dbname", "application_name", "backend_type", "pid")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`90s`, `5m`, `1h`, `2d` before now, or an ISO 8601 moment (UTC when it names none)."""
    now = now or datetime.now(UTC)
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if found:
        return now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since takes 90s, 5m, 1h, 2d or an ISO 8601 time, not {text!r}") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_time(stamp: str) -> datetime | None:
    """jsonlog's `2026-11-29 11:40:00.123 UTC` (log_timezone is UTC on our nodes)."""
    try:
        return datetime.strptime(stamp.rsplit(" ", 1)[0], "%Y-%m-%d %H:%M:%S.%f").replace(
            tzinfo=UTC)
    except (ValueError, AttributeError):
        return None


def log_files(node: Node) -> list[Path]:
    """The node's own jsonlog files, oldest first (copies of another node's, brought by a
    base backup or pg_rewind, carry that node's name and are left out)."""
    folder = Path(node.datadir) / "log"
    try:
        files = [p for p in folder.glob(f"{node.name}-*.json") if p.is_file()]
    except OSError:
        return []
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def parse_line(line: str, node: str) -> dict[str, Any] | None:
    try:
        raw = json.loads(line)
    except ValueError:
        return None  # a line being written right now
    if not isinstance(raw, dict):
        return None
    entry = {k: raw[k] for k in KEPT if k in raw}
    for key in ("message", "detail", "statement"):
        if isinstance(entry.get(key), str):
            entry[key] = redact(entry[key])
    entry["node"] = node
    return entry


@dataclass
class Filter:
    since: datetime | None = None
    errors: bool = False  # ERROR, FATAL and PANIC only

    def __call__(self, entry: dict[str, Any]) -> bool:
        if self.errors and entry.get("error_severity") not in ERROR_LEVELS:
            return False
        if self.since is not None:
            at = parse_time(entry.get("timestamp", ""))
            if at is None or at < self.since:
                return False
        return True


def _read(node: Node, keep: Filter) -> Iterator[dict[str, Any]]:
    for path in log_files(node):
        if keep.since is not None and path.stat().st_mtime < keep.since.timestamp():
            continue  # rotated away before the window began
        with open(path, errors="replace") as handle:
            for line in handle:
                entry = parse_line(line, node.name)
                if entry is not None and keep(entry):
                    yield entry


def entries(state: ClusterState, names: Iterable[str] | None = None, *,
            keep: Filter | None = None) -> list[dict[str, Any]]:
    """Every kept entry of the named nodes (default: all), merged in time order."""
    keep = keep or Filter()
    chosen = pick(state, names)
    merged = [e for node in chosen for e in _read(node, keep)]
    return sorted(merged, key=lambda e: e.get("timestamp", ""))


def pick(state: ClusterState, names: Iterable[str] | None) -> list[Node]:
    if names is None:
        return list(state.nodes)
    try:
        return [state.node(n) for n in names]
    except LookupError as exc:
        raise UsageError(str(exc)) from None


def error_summary(state: ClusterState, since: datetime) -> dict[str, Any]:
    """ERROR/FATAL/PANIC entries since `since`: counts by SQLSTATE, by level and by node."""
    found = entries(state, keep=Filter(since=since, errors=True))
    return {
        "since": since.isoformat(),
        "total": len(found),
        "by_sqlstate": dict(Counter(e.get("state_code", "?") for e in found).most_common()),
        "by_level": dict(Counter(e["error_severity"] for e in found)),
        "by_node": dict(Counter(e["node"] for e in found)),
    }


def _unread(offsets: dict[Path, int], node: Node, keep: Filter) -> list[dict[str, Any]]:
    """Entries written since `offsets` (a half-written last line waits for next time)."""
    out = []
    for path in log_files(node):
        start = offsets.get(path, 0)
        with open(path, "rb") as handle:
            handle.seek(start)
            chunk = handle.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        offsets[path] = start + len(complete)
        for line in complete.decode(errors="replace").splitlines():
            entry = parse_line(line, node.name)
            if entry is not None and keep(entry):
                out.append(entry)
    return out


async def follow(state: ClusterState, names: Iterable[str] | None = None, *,
                 keep: Filter | None = None) -> AsyncIterator[dict[str, Any]]:
    """Like `tail -f` over every chosen node's files: new entries as they are written
    (new files after a rotation included). Runs until cancelled."""
    keep = keep or Filter()
    chosen = pick(state, names)
    offsets = {p: p.stat().st_size for node in chosen for p in log_files(node)}
    while True:
        for node in chosen:
            for entry in await asyncio.to_thread(_unread, offsets, node, keep):
                yield entry
        await asyncio.sleep(FOLLOW_INTERVAL_S)


def read(state: ClusterState, query: LogQuery) -> LogReport:
    """`cluster logs` on an engine whose nodes write jsonlog here: the last entries."""
    found = entries(state, [query.node] if query.node else None, keep=_filter(query))
    return LogReport(entries=found[-query.lines:] if query.lines > 0 else found)


def follow_query(state: ClusterState, query: LogQuery) -> AsyncIterator[dict[str, Any]]:
    """New entries as they are written, until cancelled."""
    return follow(state, [query.node] if query.node else None, keep=_filter(query))


def _filter(query: LogQuery) -> Filter:
    return Filter(since=parse_since(query.since) if query.since else None, errors=query.errors)
