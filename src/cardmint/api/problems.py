"""Every error response in one shape (RFC 9457 problem details), and the OpenAPI
description of it: `responses(400, 404, ...)` for a route's `responses=`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cardmint.api.models.problem import Problem, ProblemItem
from cardmint.dsn import redact
from cardmint.errors import (
    CardmintError,
    DatabaseUnavailable,
    Frozen,
    NoPrimary,
    PoolExhausted,
    QueryTimeout,
    ValidationError,
)

log = logging.getLogger("cardmint.api")
MEDIA_TYPE = "application/problem+json"
TITLES = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 412: "Precondition Failed",
          413: "Content Too Large", 422: "Unprocessable Content", 428: "Precondition Required"}
# What each status means on this API (the OpenAPI description of the response).
MEANINGS = {
    400: "A parameter, a header or the body is not valid; `errors` names each one",
    401: "No token, or not a valid one (WWW-Authenticate: Bearer)",
    403: "The token's scope does not allow this",
    404: "Not found",
    409: "Not possible in the current state",
    412: "If-Match names an older version than the current one",
    413: "The request body is too large",
    415: "The body is not one of the accepted media types",
    422: "Well-formed, but not something that can be stored; `errors` names the fields",
    428: "This change needs If-Match",
    429: "Too many failed authentications from this client (Retry-After)",
    503: "The database is unavailable for now (Retry-After)",
}
AUTH = (401, 403, 429)  # what any route behind a token may answer


def problem(status: int, title: str, detail: str, *, errors: Sequence[ProblemItem] = (),
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=list(errors)).body()
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


class Refused(HTTPException):
    """A refusal a route raises (out of a write's transaction too, rolling it back),
    answered as a problem naming the field."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 errors: list[ProblemItem] | None = None) -> None:
        super().__init__(status, message)
        self.errors = errors if errors is not None else (
            [ProblemItem(field=field, message=message)] if field else [])

    def response(self) -> JSONResponse:
        return problem(self.status_code, TITLES.get(self.status_code, "Error"),
                       str(self.detail), errors=self.errors)


def unavailable_detail(exc: DatabaseUnavailable) -> str:
    """Why a 503, in our words: the server's message may name hosts, roles or tables."""
    if isinstance(exc, Frozen):
        return "writes are frozen (`cardmint db freeze`); reads still work"
    if isinstance(exc, NoPrimary):
        return "the database is unavailable for writes just now (no primary; a failover " \
               "may be under way)"
    if isinstance(exc, QueryTimeout):
        return "the database is unavailable: the query ran too long and was cancelled"
    if isinstance(exc, PoolExhausted):
        return "the database is unavailable: every connection is busy"
    return "the database is unavailable just now"


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each status answered with a problem."""
    return {status: {"description": MEANINGS[status],
                     "content": {MEDIA_TYPE: {"schema": {"$ref": _ref("Problem")}}}}
            for status in sorted(statuses)}


def install(app: FastAPI) -> None:
    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("answered 503: %s", redact(str(exc)))  # the server's words stay here
        return problem(503, "Service Unavailable", unavailable_detail(exc),
                       headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(ValidationError)
    async def invalid(_: Request, exc: ValidationError) -> JSONResponse:
        # our words only: db/errors.py never puts the server's message in one of these
        errors = [ProblemItem(field=exc.field, message=str(exc))] if exc.field else []
        return problem(422, "Unprocessable Content", redact(str(exc)), errors=errors)

    @app.exception_handler(CardmintError)
    async def failed(_: Request, exc: CardmintError) -> JSONResponse:
        log.error("answered 500: %s: %s", type(exc).__name__, redact(str(exc)))
        return problem(500, "Internal Server Error", type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [ProblemItem(field=".".join(str(p) for p in e["loc"]), message=e["msg"])
                  for e in exc.errors()]
        return problem(400, "Bad Request", "the request has invalid fields", errors=errors)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail),
                       headers=getattr(exc, "headers", None))

    _document(app)


def _ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def _document(app: FastAPI) -> None:
    """Add the Problem schema to the app's OpenAPI document, and drop the 422 FastAPI
    describes for every route with parameters: a request it cannot parse gets our 400
    problem, and the routes that can answer 422 declare it themselves."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        problem_schema = Problem.model_json_schema(ref_template=_ref("{model}"),
                                                   mode="serialization")
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
        for item in document.get("paths", {}).values():
            for operation in item.values():
                answers = operation.get("responses", {})
                if "HTTPValidationError" in str(answers.get("422", "")):
                    del answers["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
