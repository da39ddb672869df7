"""Rows of an import file that matched no card, sent to the review queue: one capture per
row, waiting for an operator (`needs_review`, no identify job: the row has already been
looked up, and a guess must not stock it). The capture holds the row's text and what was
read from it, so the reviewer sees what the file said and why it did not match."""

from __future__ import annotations

from collections.abc import Sequence

from cardmint.intake.tx import Executor
from cardmint.inventory.interchange.importer import ImportReport
from cardmint.inventory.interchange.layouts import VendorRow

INSERT_SQL = """
INSERT INTO captures (image_ref, status, ocr_text, ocr)
SELECT r, 'needs_review', t, d
FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS x(r, t, d)
RETURNING id
"""


async def send_to_review(ex: Executor, report: ImportReport, rows: Sequence[VendorRow], *,
                         submitter: str) -> dict[int, int]:
    """{line: capture id} for the unmatched rows kept by the import."""
    if not rows:
        return {}
    reasons = {r.line: r.reason for r in report.results if r.status == "unmatched"}
    refs, texts, docs = [], [], []
    for row in rows:
        refs.append(f"import:{report.format}:line-{row.line}")
        texts.append(row.text)
        docs.append({
            "fields": {"name": row.name or None, "number": row.number or None,
                       "set_code": row.set_code or row.set_name or None, "hp": None},
            "metadata": {"import": report.format, "line": row.line,
                         "quantity": row.quantity, "set_name": row.set_name,
                         "printing": row.printing_text},
            "submitter": submitter, "condition": row.condition, "language": row.language,
            "location": row.location, "variant": None,
            "reasons": [{"code": "import_unmatched", "message": f"{report.format} import, "
                         f"line {row.line}: {reasons.get(row.line) or 'no match'}"}],
        })
    found = await ex.fetch(INSERT_SQL, refs, texts, docs)
    return {row.line: r["id"] for row, r in zip(rows, found, strict=True)}
