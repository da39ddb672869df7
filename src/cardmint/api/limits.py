"""Bounds on what a request may send: a body larger than the limit is refused with 413
before any of it is processed, whether or not the client announced its length. Photo
uploads (multipart or an image body, on the paths given in `uploads`) have their own,
larger limit."""

from __future__ import annotations

import json
from collections.abc import Mapping

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardmint import inputs
from cardmint.api.models.problem import Problem, ProblemItem


class BodyTooLarge(Exception):
    pass


UPLOAD_TYPES = (b"multipart/form-data", b"image/", b"text/csv", b"text/plain",
                b"application/csv", b"application/octet-stream")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int,
                 uploads: Mapping[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.uploads = app, max_bytes, dict(uploads or {})

    def limit(self, scope: Scope, headers: dict[bytes, bytes]) -> int:
        upload = self.uploads.get(scope.get("path", ""))
        kind = headers.get(b"content-type", b"").lower()
        if upload is not None and kind.startswith(UPLOAD_TYPES):
            return upload
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        max_bytes = self.limit(scope, headers)
        declared = headers.get(b"content-length")
        size = None if declared is None else inputs.whole(declared.decode("latin-1"))
        if size is not None and size > max_bytes:
            await _too_large(send, max_bytes)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, max_bytes)


async def _too_large(send: Send, max_bytes: int) -> None:
    raw = json.dumps(Problem(
        title="Content Too Large", status=413,
        detail=f"the request body is larger than {max_bytes} bytes",
        errors=[ProblemItem(field="body", message="too large")]).body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


def install(app: FastAPI, *, max_body_bytes: int,
            uploads: Mapping[str, int] | None = None) -> None:
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, uploads=uploads)
