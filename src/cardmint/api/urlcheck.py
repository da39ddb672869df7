"""A URL whose path or query holds a character no page or route can use (NUL, another
control character, a line break, a direction-changing character, a lone surrogate) is
refused with a 400 naming the parameter, before any route sees it: such text would
otherwise reach PostgreSQL ("invalid byte sequence ... 0x00") or be shown to a person
reordered. One check for every route, the API's and the pages', present and future."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cardmint import inputs
from cardmint.api.models.problem import Problem, ProblemItem
from cardmint.web import API_PREFIXES
from cardmint.web.render import render


def problem_in(scope: Scope) -> ProblemItem | None:
    """The first unusable part of the request's path or query, or None."""
    found = inputs.text_problem(scope.get("path", ""))
    if found is not None:
        return ProblemItem(field="path", message=found)
    query = scope.get("query_string", b"").decode("latin-1")
    # parse_qsl decodes %-escapes as UTF-8, so "%00" and "%E2%80%AE" are seen as sent
    for name, value in parse_qsl(query, keep_blank_values=True):
        name_problem = inputs.text_problem(name)
        if name_problem is not None:
            return ProblemItem(field="query", message=f"a parameter name {name_problem}")
        found = inputs.text_problem(value)
        if found is not None:
            return ProblemItem(field=f"query.{name[:40]}", message=found)
    return None


class UrlCheck:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        item = problem_in(scope) if scope["type"] == "http" else None
        if item is None:
            await self.app(scope, receive, send)
            return
        response: Response
        if scope.get("path", "").startswith(API_PREFIXES):
            body = Problem(title="Bad Request", status=400,
                           detail=f"{item.field} {item.message}", errors=[item]).body()
            response = JSONResponse(body, status_code=400,
                                    media_type="application/problem+json")
        else:
            response = render(Request(scope), "message.html", status_code=400,
                              heading="Bad request",
                              message=f"The address cannot be used: {item.field} "
                                      f"{item.message}.", back="/catalog")
        await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(UrlCheck)
