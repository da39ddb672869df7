"""What the intake routes answer: a capture with what processing found, and the review
queue of them."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field

from cardmint.api.models.base import Condition, Listing, Schema, Timestamp

MetadataValue = str | int | float | bool | None


class OcrRead(Schema):
    """What OCR read off the card, as submitted."""

    name: str | None
    number: str | None
    set_code: str | None
    hp: int | str | None


class VariantHint(Schema):
    """What the submitter knew of the printing (fields in the order jsonb keeps them)."""

    foil: str | None
    type: str | None
    stamps: list[str]
    subtype: str | None


class CaptureCandidate(Schema):
    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str
    confidence: float


class ReviewReason(Schema):
    code: str = Field(description="low_confidence, high_value, first_edition, no_match, "
                                  "variant_unknown, import_unmatched (a file's row)")
    message: str


class CapturePrice(Schema):
    """The market price the capture was checked against."""

    price_cents: int
    currency: str
    source: str
    observed_at: str = Field(json_schema_extra={"format": "date-time"})


class StockedItem(Schema):
    id: int
    product_id: int
    sku: str


class Job(Schema):
    id: int
    status: str
    attempts: int
    max_attempts: int
    run_after: Timestamp
    last_error: str | None
    finished_at: Timestamp | None


class Discarded(Schema):
    by: str
    reason: str
    at: str


class Capture(Schema):
    id: int
    status: str = Field(description="queued, processing, processed, needs_review, failed, "
                        "discarded")
    image_ref: str
    ocr_text: str | None
    ocr: OcrRead
    variant: VariantHint | None
    condition: Condition | None
    language: str | None
    location: str | None
    metadata: dict[str, MetadataValue]
    submitted_by: str | None
    card_id: str | None
    variant_id: int | None
    confidence: float | None
    candidates: list[CaptureCandidate]
    review_reasons: list[ReviewReason]
    price: CapturePrice | None
    item: StockedItem | None
    resolved_by: str | None
    error: str | None
    job: Job | None
    created_at: Timestamp
    updated_at: Timestamp
    image_url: str | None = Field(description="The photo (read scope), when one was sent")
    discarded: Discarded | None = Field(None, description="Who discarded it in review, "
                                        "when and why")

    @classmethod
    def of(cls, c: dict[str, Any]) -> Self:
        """From `intake.captures.view`."""
        fields, item = c["fields"] or {}, c["item"]
        return cls.model_validate({
            **c, "ocr": {"name": fields.get("name"), "number": fields.get("number"),
                         "set_code": fields.get("set_code"), "hp": fields.get("hp")},
            "submitted_by": c["submitter"], "review_reasons": c["reasons"],
            "item": None if item is None else {
                "id": item["item_id"], "product_id": item["product_id"], "sku": item["sku"]},
            "image_url": f"/v1/captures/{c['id']}/image" if c.get("image_sha256") else None,
        })


class OneCapture(Schema):
    data: Capture


class ReviewQueue(Listing[Capture]):
    pass
