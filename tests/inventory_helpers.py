"""What the inventory, price and CSV tests share: an app on the session cluster with a
read and a write token, and a way to find a card's variants. Items cannot be deleted
(the ledger is append-only and refers to them), so each test works in locations and
price sources of its own and asserts only about those."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from cardmint import tokens
from cardmint.api.app import create_app
from cardmint.db import Database
from support import TestCluster, serving


class Api:
    def __init__(self, client: httpx.AsyncClient, db: Database) -> None:
        self.c, self.db = client, db
        self.tag = uuid.uuid4().hex[:10]
        self.owner = f"inv-test-{self.tag}"
        self.headers: dict[str, dict[str, str]] = {"none": {}}

    async def login(self) -> None:
        for scope in ("read", "write"):
            token, _ = await tokens.create_token(self.db, owner=f"{self.owner}-{scope}",
                                                 scope=scope)
            self.headers[scope] = {"Authorization": f"Bearer {token}"}

    def location(self, name: str = "box") -> str:
        return f"{name}-{self.tag}"

    def _h(self, scope: str, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.headers[scope], **(extra or {})}

    async def get(self, path: str, scope: str = "read", **params: Any) -> httpx.Response:
        return await self.c.get(path, params=params, headers=self.headers[scope])

    async def post(self, path: str, body: Any = None, scope: str = "write",
                   headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return await self.c.post(path, json=body, params=params,
                                 headers=self._h(scope, headers))

    async def patch(self, path: str, body: Any, scope: str = "write",
                    headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.c.patch(path, json=body, headers=self._h(scope, headers))

    async def add(self, **body: Any) -> dict[str, Any]:
        body.setdefault("location", self.location())
        r = await self.post("/v1/inventory/items", body)
        assert r.status_code == 201, r.text
        return r.json()["data"]

    async def variant(self, card_id: str, type_: str, subtype: str | None = None,
                      stamps: list[str] | None = None, size: str | None = None) -> int:
        return await self.db.fetchval(
            "SELECT id FROM card_variants WHERE card_id = $1 AND type = $2"
            " AND subtype IS NOT DISTINCT FROM $3 AND stamps = $4::text[]"
            " AND size IS NOT DISTINCT FROM $5", card_id, type_, subtype, stamps or [], size)

    async def ledger_count(self, item_id: int) -> int:
        return await self.db.fetchval(
            "SELECT count(*) FROM inventory_ledger WHERE item_id = $1", item_id)

    async def items_at(self, location: str) -> int:
        return await self.db.fetchval(
            "SELECT count(*) FROM inventory_items WHERE location = $1", location)


@asynccontextmanager
async def opened(pg: TestCluster) -> AsyncIterator[Api]:
    """An Api on a fresh app; the prices the test stored (sources naming its tag) go."""
    app = create_app(pg.settings())
    async with serving(app) as client:
        a = Api(client, app.state.db)
        await a.login()
        yield a
        await a.db.execute("DELETE FROM prices WHERE source LIKE $1", f"%{a.tag}%")


def problem_fields(response: httpx.Response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]
