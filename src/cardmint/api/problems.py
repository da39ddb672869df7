"""Every error response in one shape (RFC 9457 problem details)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cardmint.dsn import redact
from cardmint.errors import CardmintError, DatabaseUnavailable, ValidationError


def problem(status: int, title: str, detail: str, *, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "errors": errors or []}
    return JSONResponse(body, status_code=status, headers=headers,
                        media_type="application/problem+json")


def install(app: FastAPI) -> None:
    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return problem(503, "Service Unavailable", redact(str(exc)),
                       headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(ValidationError)
    async def invalid(_: Request, exc: ValidationError) -> JSONResponse:
        errors = [{"field": exc.field, "message": str(exc)}] if exc.field else []
        return problem(422, "Unprocessable Content", redact(str(exc)), errors=errors)

    @app.exception_handler(CardmintError)
    async def failed(_: Request, exc: CardmintError) -> JSONResponse:
        return problem(500, "Internal Server Error", type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                  for e in exc.errors()]
        return problem(400, "Bad Request", "the request has invalid fields", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail),
                       headers=getattr(exc, "headers", None))
