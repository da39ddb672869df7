"""Schemathesis against the real server's OpenAPI: whatever a client sends, never a 5xx.

Runs on a cluster of its own (writes made by random requests must not disturb the other
tests), with a write token so the write routes validate their bodies instead of stopping
at authentication.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from cardmint import tokens
from cardmint.catalog.load import load_catalog
from cardmint.config import secret
from cardmint.db import Database, migrate
from cardmint.db.connect import connection
from cardmint.ops.loadtest.apiserver import serving
from support import start_cluster

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="session")
async def fuzz_server(work_root: Path, template_dir: Path) -> AsyncIterator[tuple[str, str]]:
    tc = await start_cluster(work_root, template_dir, "fuzz", replicas=0)
    try:
        s = tc.settings()
        await asyncio.to_thread(migrate.upgrade, secret(s.migration_url))
        async with connection(secret(s.migration_url), s) as conn:
            await load_catalog(conn, sample=True)
        db = Database(s.model_copy(update={"pool_min": 1}))
        await db.open(monitor=False)
        try:
            token, _ = await tokens.create_token(db, owner="fuzz", scope="admin")
        finally:
            await db.close()
        async with serving(tc.settings(), extra_args=("--no-worker",)) as (url, _pid):
            yield url, token
    finally:
        await tc.cluster.down(purge=True)


@pytest.mark.slow
def test_no_request_gets_a_server_error(fuzz_server: tuple[str, str]) -> None:
    url, token = fuzz_server
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    # schemathesis's pytest plugin predates pytest 9: drive each operation with
    # hypothesis directly instead
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/health/"):
            continue  # 503 is their answer by design (no replica, not ready), as Patroni's
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            fuzz()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert operations >= 15
    assert failures == []
