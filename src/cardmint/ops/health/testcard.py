"""`cardmint test-card`, the runbook's "verify schema" step after a deploy.

The schema's revision must be the code's head; then a capture and an inventory item are
written in one transaction on the primary, read back there and on every replica (timed
until visible), and removed. Whatever fails, nothing stays behind.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from cardmint.config import Settings, secret
from cardmint.db import Database, migrate, one
from cardmint.db.connect import connection
from cardmint.errors import CardmintError

VISIBLE_TIMEOUT_S = 10.0
MARK = "test-card"


@dataclass
class Step:
    name: str
    ok: bool
    duration_ms: float
    detail: str = ""


@dataclass
class TestCardReport:
    __test__ = False  # not a pytest class

    ok: bool
    revision: str | None
    head: str
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Steps:
    def __init__(self) -> None:
        self.done: list[Step] = []

    async def run(self, name: str, coro: Any) -> Any:
        began = time.perf_counter()
        try:
            result = await coro
        except Exception as exc:
            self.done.append(Step(name, False, _ms(began), str(exc) or type(exc).__name__))
            raise
        detail = result if isinstance(result, str) else ""
        self.done.append(Step(name, True, _ms(began), detail))
        return result


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)


async def run_test_card(settings: Settings) -> TestCardReport:
    head = migrate.head()
    steps = _Steps()
    db = Database(settings.model_copy(update={"pool_min": 1, "pool_max": 2}))
    revision = None
    ok = False
    try:
        await steps.run("connect", db.open(monitor=False))
        revision = await steps.run("revision", _revision(db, head))
        token = f"{MARK}-{uuid.uuid4().hex[:12]}"
        try:
            ids = await steps.run("write", _write(db, token))
            await steps.run("read primary", _read(db, ids))
            for i, url in enumerate(settings.replica_urls):
                await steps.run(f"read replica {i + 1}",
                                _visible(secret(url), settings, ids, present=True))
        finally:
            await steps.run("cleanup", _remove(db, token))
        ok = True
    except (CardmintError, AssertionError, TimeoutError):
        ok = False
    finally:
        await db.close()
    return TestCardReport(ok=ok and all(s.ok for s in steps.done), revision=revision,
                          head=head, steps=steps.done)


async def _revision(db: Database, head: str) -> str:
    try:
        current = await db.fetchval("SELECT string_agg(version_num, ',') FROM alembic_version")
    except CardmintError as exc:
        raise AssertionError(f"no schema revision ({exc}): run `cardmint db upgrade`") from None
    if current != head:
        raise AssertionError(f"schema at {current}, code at {head}: run `cardmint db upgrade`")
    return str(current)


async def _write(db: Database, token: str) -> dict[str, Any]:
    """A capture and an inventory item in one transaction, on a catalog card if there is
    one, else on a card made for the occasion."""
    async with db.transaction() as tx:
        variant = await tx.fetchrow(
            "SELECT id, card_id FROM card_variants ORDER BY id LIMIT 1")
        if variant is None:
            await tx.execute("INSERT INTO sets (id, name, series_id, series_name, card_count) "
                             "VALUES ($1, $1, $1, $1, 1)", token)
            await tx.execute("INSERT INTO cards (id, set_id, local_id, position, name, "
                             "category) VALUES ($1 || '-1', $1, '1', 1, $1, 'Pokemon')", token)
            variant = one(await tx.fetchrow(
                "INSERT INTO card_variants (card_id, type, stamps, position) "
                "VALUES ($1 || '-1', 'normal', '{}', 1) RETURNING id, card_id", token))
        capture = await tx.fetchval(
            "INSERT INTO captures (image_ref, ocr_text) VALUES ($1, $2) RETURNING id",
            f"{MARK}://{token}", token)
        product = await tx.fetchval(
            "INSERT INTO products (card_id, variant_id, condition, language, sku) "
            "VALUES ($1, $2, 'DMG', 'xx', $3) RETURNING id",
            variant["card_id"], variant["id"], token.upper())
        item = await tx.fetchval(
            "INSERT INTO inventory_items (product_id, location, acquisition_cost_cents) "
            "VALUES ($1, $2, 0) RETURNING id", product, token)
    return {"capture": capture, "product": product, "item": item}


READ_SQL = """
SELECT (SELECT count(*) FROM captures WHERE id = $1)
     + (SELECT count(*) FROM inventory_items WHERE id = $2)
"""


async def _read(db: Database, ids: dict[str, Any]) -> str:
    found = await db.fetchval(READ_SQL, ids["capture"], ids["item"])
    if found != 2:
        raise AssertionError(f"wrote 2 rows, read back {found} on the primary")
    return "capture and item read back"


async def _visible(dsn: str | None, settings: Settings, ids: dict[str, Any], *,
                   present: bool) -> str:
    """Poll a replica until the rows are there, up to the lag alert threshold."""
    if not dsn:
        raise AssertionError("no DSN for the replica")
    began = time.perf_counter()
    deadline = began + max(VISIBLE_TIMEOUT_S, settings.replica_lag_critical_s)
    async with connection(dsn, settings, application="cardmint-test-card") as conn:
        while True:
            found = await conn.fetchval(READ_SQL, ids["capture"], ids["item"])
            if (found == 2) == present:
                return f"visible after {_ms(began):.1f} ms"
            if time.perf_counter() > deadline:
                raise AssertionError(f"not visible after {_ms(began):.0f} ms")
            await asyncio.sleep(0.005)


async def _remove(db: Database, token: str) -> str:
    """Everything marked with this run's token, children first. Ledger rows are never
    written by test-card, since the ledger is append-only."""
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM inventory_items WHERE location = $1", token)
        await tx.execute("DELETE FROM products WHERE sku = $1", token.upper())
        await tx.execute("DELETE FROM captures WHERE image_ref = $1", f"{MARK}://{token}")
        await tx.execute("DELETE FROM card_variants WHERE card_id = $1 || '-1'", token)
        await tx.execute("DELETE FROM cards WHERE set_id = $1", token)
        await tx.execute("DELETE FROM sets WHERE id = $1", token)
    return "removed"
