"""The answer to a file import (and its dry run): counts, one line per row, and the items
a sync found that the file does not mention."""

from __future__ import annotations

from dataclasses import asdict
from typing import Self

from pydantic import Field

from cardmint.api.models.base import Schema
from cardmint.inventory.interchange.importer import ImportReport


class RowReport(Schema):
    line: int
    status: str = Field(description="matched, skipped, unmatched or error")
    reason: str | None = Field(None, description="Why the row was skipped or not matched")
    field: str | None = None
    card_id: str | None = None
    card_name: str | None = None
    variant_id: int | None = None
    printing: str | None = None
    condition: str | None = None
    language: str | None = None
    quantity: int | None = None
    matched_by: str | None = Field(None, description="The key that matched: TCGplayer SKU, "
                                   "TCGplayer product id, set + number, set + name, ...")
    action: str | None = Field(None, description="What the import does (or would do)")
    note: str | None = None
    capture_id: int | None = Field(None, description="The review-queue capture made of it")


class MissingItems(Schema):
    card_id: str
    card_name: str
    printing: str
    condition: str
    location: str | None
    grade: str | None
    quantity: int


class FileImport(Schema):
    format: str
    mode: str
    dry_run: bool
    rows: int
    matched: int
    skipped: int
    unmatched: int
    errors: int
    items_added: int
    items_removed: int
    items_unchanged: int
    missing_items: int = Field(description="Items in stock the file does not mention "
                               "(sync); removed only with prune")
    pruned: bool
    skus_learned: int
    results: list[RowReport]
    results_truncated: bool
    missing: list[MissingItems]

    @classmethod
    def of(cls, r: ImportReport, captures: dict[int, int] | None = None) -> Self:
        captures = captures or {}
        return cls(
            format=r.format, mode=r.mode, dry_run=r.dry_run, rows=r.rows, matched=r.matched,
            skipped=r.skipped, unmatched=r.unmatched, errors=r.errors,
            items_added=r.items_added, items_removed=r.items_removed,
            items_unchanged=r.items_unchanged, missing_items=r.missing_items,
            pruned=r.pruned, skus_learned=r.skus_learned,
            results=[RowReport(**asdict(x), capture_id=captures.get(x.line)) for x in r.results],
            results_truncated=r.results_truncated,
            missing=[MissingItems(**asdict(m)) for m in r.missing])


class OneFileImport(Schema):
    data: FileImport
