"""The one shape of every error response (RFC 9457 problem details)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ProblemItem(BaseModel):
    """One thing wrong with the request: where (`field`, e.g. `body.rows[3].priceCents`,
    `query.q`, `header.If-Match`) and what. A feed row also gives its `index`, a CSV row
    its `line`."""

    index: int | None = None
    field: str
    message: str
    line: int | None = None


class Problem(BaseModel):
    type: str = Field("about:blank", description="Always about:blank: the status says it")
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)

    def body(self) -> dict[str, object]:
        """As sent: a feed row's index and a CSV row's line only where they apply."""
        return self.model_dump(mode="json", exclude_none=True)
