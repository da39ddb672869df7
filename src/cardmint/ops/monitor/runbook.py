"""Links into the runbook shipped with CardMint (`docs/runbook.md`), by heading.

An alert names its runbook section as the headings people see ("Scaling Procedures ›
Vertical Scaling"); the link points at the last heading's anchor as GitHub (and most
Markdown renderers) make it: lower case, punctuation dropped, spaces as hyphens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

RUNBOOK = "docs/runbook.md"
SEPARATOR = " › "


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: "High Latency (>150ms)" -> "high-latency-150ms",
    "🚨 Emergency Contacts & Escalation" -> "-emergency-contacts--escalation"."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters and digits of any script
    return text.replace(" ", "-")


def link(section: str, base: str = RUNBOOK) -> str:
    """`base#anchor` for a section named "Chapter › Heading" (its last heading)."""
    return f"{base}#{anchor(section.split(SEPARATOR)[-1])}"


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor in a Markdown text (fenced code blocks skipped)."""
    out, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            out.add(anchor(m.group(1)))
    return out


VERDICTS_HEADING = "## ✅ One Verdict Per Condition (CardMint)"


def verdicts_table(rules: Iterable[Any], status_of: dict[str, str]) -> str:
    """The runbook's table of every alert: its severity, the status `health` and the
    dashboard give it, and the command that fixes it (docs/runbook.md holds it; a test
    keeps the two equal)."""
    rows = ["| condition | severity | status (exit code) | fix | runbook |",
            "|---|---|---|---|---|"]
    for r in rules:
        status = status_of[r.severity]
        fix = r.advice(None).replace("{names}", "the primaries")
        rows.append(f"| `{r.name}` | {r.severity} | {status} "
                    f"({2 if status == 'critical' else 1}) | {fix} | "
                    f"[{r.runbook_section}](#{anchor(r.runbook_section.split(SEPARATOR)[-1])}) |")
    return "\n".join(rows) + "\n"
