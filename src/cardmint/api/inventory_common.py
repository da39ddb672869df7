"""What the inventory and price routes share: the request model base, turning the
inventory's refusals into problem responses, and running a write in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from cardmint.api.auth import Principal
from cardmint.api.idempotency import idempotent
from cardmint.api.problems import problem
from cardmint.db import Database, Transaction
from cardmint.errors import ValidationError
from cardmint.inventory.errors import Conflict, NotFound, StaleVersion, TransitionNotAllowed

TITLES = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 412: "Precondition Failed",
          413: "Content Too Large", 422: "Unprocessable Content", 428: "Precondition Required"}


class Refused(HTTPException):
    """A refusal raised out of a write's transaction (rolling it back), answered as a
    problem naming the field."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(status, message)
        self.errors = errors if errors is not None else (
            [{"field": field, "message": message}] if field else [])

    def response(self) -> JSONResponse:
        return problem(self.status_code, TITLES.get(self.status_code, "Error"),
                       str(self.detail), errors=self.errors)


def refusal(exc: Exception, location: str = "body") -> Refused | None:
    """The problem for one of the inventory's refusals, or None if it is not one."""
    if isinstance(exc, NotFound):
        return Refused(404, str(exc))
    if isinstance(exc, StaleVersion):
        return Refused(412, str(exc), "header.If-Match")
    if isinstance(exc, TransitionNotAllowed):
        return Refused(409, str(exc), "status")
    if isinstance(exc, Conflict):
        return Refused(409, str(exc), f"{location}.{exc.field}")
    if isinstance(exc, ValidationError):
        return Refused(422, str(exc), f"{location}.{exc.field}" if exc.field else location)
    return None


Work = Callable[[Transaction], Awaitable[tuple[int, dict[str, Any]]]]


async def write(request: Request, who: Principal, work: Work, *,
                idempotent_post: bool = True) -> JSONResponse:
    """Run `work` in one transaction (idempotent for POSTs): a refusal rolls all of it
    back and is answered as a problem."""

    async def run(tx: Transaction) -> tuple[int, dict[str, Any]]:
        try:
            return await work(tx)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc

    try:
        if idempotent_post:
            return await idempotent(request, who, run)
        db: Database = request.app.state.db
        async with db.transaction() as tx:
            status, body = await run(tx)
        return JSONResponse(jsonable_encoder(body), status_code=status)
    except Refused as exc:
        return exc.response()
