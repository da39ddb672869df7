"""What the inventory and price routes share: the inventory's refusals as problems, and
running a write in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cardmint.api.auth import Principal
from cardmint.api.idempotency import idempotent
from cardmint.api.problems import Refused
from cardmint.db import Database, Transaction
from cardmint.errors import ValidationError
from cardmint.inventory.errors import Conflict, NotFound, StaleVersion, TransitionNotAllowed


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


Work = Callable[[Transaction], Awaitable[tuple[int, BaseModel]]]


async def write(request: Request, who: Principal, work: Work, *,
                idempotent_post: bool = True, fingerprint: bytes | None = None
                ) -> JSONResponse:
    """Run `work` in one transaction (idempotent for POSTs): a refusal rolls all of it
    back and is raised as a `Refused` (the app answers it with a problem)."""

    async def run(tx: Transaction) -> tuple[int, BaseModel]:
        try:
            return await work(tx)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc

    if idempotent_post:
        return await idempotent(request, who, run, fingerprint=fingerprint)
    db: Database = request.app.state.db
    async with db.transaction() as tx:
        status, answer = await run(tx)
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)
