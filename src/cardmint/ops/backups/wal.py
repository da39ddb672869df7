"""WAL file names, timeline histories and the archive's continuity, as pure functions.

A segment is named TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then the segment number split in
two. Recovery reads segment n from the newest timeline of its history that had begun by
n, so "continuous" means: for every segment from a backup's start to the archive's end,
the file of that timeline is there. These rules are tested without a server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cardmint.cluster.pg.probe import parse_lsn

SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
# What pg_archivecleanup removes besides segments: a promoted server's last segment of
# its old timeline, and backup history files.
OLD_WAL = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$")
NO_END = 1 << 64


def segments_per_id(seg_size: int) -> int:
    return 0x1_0000_0000 // seg_size


def segno(lsn: str | int, seg_size: int) -> int:
    """The segment number holding `lsn`."""
    value = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    assert value is not None
    return value // seg_size


def name(tli: int, seg: int, seg_size: int) -> str:
    per = segments_per_id(seg_size)
    return f"{tli:08X}{seg // per:08X}{seg % per:08X}"


def parse(filename: str, seg_size: int) -> tuple[int, int] | None:
    """(timeline, segment number) of a segment file name, or None for anything else."""
    m = SEGMENT.match(filename)
    if not m:
        return None
    return int(m[1], 16), int(m[2], 16) * segments_per_id(seg_size) + int(m[3], 16)


@dataclass(frozen=True)
class Span:
    """One timeline of a history: it runs from `begin` (inclusive) to `end` (exclusive)."""

    tli: int
    begin: int
    end: int


def parse_history(tli: int, text: str) -> list[Span]:
    """The path to timeline `tli`, oldest first, from the text of its .history file
    (lines: parent timeline, switch point, reason)."""
    spans: list[Span] = []
    begin = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        parent, switch = int(parts[0]), parse_lsn(parts[1])
        assert switch is not None
        spans.append(Span(parent, begin, switch))
        begin = switch
    spans.append(Span(tli, begin, NO_END))
    return spans


def path_to(tli: int, histories: dict[int, str]) -> list[Span]:
    """The timeline path ending at `tli` (timeline 1, or one without a history file,
    is its own whole path)."""
    text = histories.get(tli)
    return parse_history(tli, text) if text is not None else [Span(tli, 0, NO_END)]


@dataclass
class Continuity:
    ok: bool
    timeline: int  # the newest timeline the backup's WAL leads to
    first: str | None
    last: str | None  # the archive's end on that path
    checked: int
    missing: list[str] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "timeline": self.timeline, "first": self.first,
                "last": self.last, "checked": self.checked, "missing": self.missing[:20],
                "missing_count": len(self.missing), "detail": self.detail}


def continuity(files: Iterable[str], histories: dict[int, str], *, start_tli: int,
               start_lsn: str, end_lsn: str, seg_size: int) -> Continuity:
    """Is every segment a restore needs there, from the backup's start to the archive's
    end on the newest timeline that descends from the backup's?"""
    present: set[tuple[int, int]] = set()
    for f in files:
        parsed = parse(f, seg_size)
        if parsed is not None:
            present.add(parsed)
    start = parse_lsn(start_lsn)
    assert start is not None
    first_seg, backup_end_seg = segno(start, seg_size), segno(end_lsn, seg_size)

    def leads_here(tli: int) -> list[Span] | None:
        path = path_to(tli, histories)
        ok = any(s.tli == start_tli and s.begin <= start < s.end for s in path)
        return path if ok else None

    candidates = sorted({t for t, _ in present} | set(histories) | {start_tli}, reverse=True)
    path = next((p for t in candidates if (p := leads_here(t)) is not None),
                [Span(start_tli, 0, NO_END)])
    target = path[-1].tli

    def needed(seg: int) -> str:
        span = next(s for s in reversed(path) if s.begin // seg_size <= seg)
        return name(span.tli, seg, seg_size)

    archived_end = max(
        (seg for tli, seg in present for s in path
         if s.tli == tli and s.begin // seg_size <= seg and seg >= first_seg
         and (s.end == NO_END or seg <= (s.end - 1) // seg_size)),
        default=None,
    )
    last_seg = max(backup_end_seg, archived_end if archived_end is not None else -1)
    wanted = [needed(seg) for seg in range(first_seg, last_seg + 1)]
    names = {name(t, s, seg_size) for t, s in present}
    missing = [w for w in wanted if w not in names]
    if archived_end is None:
        detail = "the archive holds no WAL from this backup on"
    elif missing:
        detail = (f"{len(missing)} of {len(wanted)} segment(s) missing, first {missing[0]}: "
                  "a restore from this backup stops there")
    else:
        detail = f"{len(wanted)} segment(s) {wanted[0]} .. {wanted[-1]} on timeline {target}"
    return Continuity(ok=not missing, timeline=target, first=wanted[0] if wanted else None,
                      last=wanted[-1] if wanted else None, checked=len(wanted),
                      missing=missing, detail=detail)


def removable(files: Iterable[str], keep_from: str) -> list[str]:
    """Archive files a restore from a backup starting at segment `keep_from` never reads:
    segments (and .partial / .backup files) before it, on any timeline, as
    pg_archivecleanup decides. Timeline history files are tiny and always kept."""
    cutoff = keep_from[8:24]
    return sorted(f for f in files if OLD_WAL.match(f) and f[8:24] < cutoff)


def read_archive(archive: Path) -> tuple[list[str], dict[int, str]]:
    """The archive's file names and the text of its timeline history files."""
    try:
        files = sorted(p.name for p in archive.iterdir())
    except FileNotFoundError:
        return [], {}
    histories = {}
    for f in files:
        m = HISTORY.match(f)
        if m:
            histories[int(m[1], 16)] = (archive / f).read_text()
    return files, histories
