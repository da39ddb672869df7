"""Schemathesis against the real server's OpenAPI: whatever a client sends, never a 5xx,
and every answer is one the document describes (its status, media type and schema).
Also, without a server: every operation documents a schema for its success answer and
the problem shape for its errors.

The fuzz runs on a cluster of its own (writes made by random requests must not disturb
the other tests), with a write token so the write routes validate their bodies instead of
stopping at authentication.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from cardmint import tokens
from cardmint.api.app import create_app
from cardmint.catalog.load import load_catalog
from cardmint.config import Settings, secret
from cardmint.db import Database, migrate
from cardmint.db.connect import connection
from cardmint.ops.loadtest.apiserver import serving
from support import start_cluster

EXAMPLES_PER_OPERATION = 25
CONFORMANCE = [response_schema_conformance, status_code_conformance, content_type_conformance]
PROBLEM = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="session")
def fuzz_log(work_root: Path) -> Path:
    """What `cardmint serve` printed while fuzzed."""
    return work_root / "fuzz-serve.log"


@pytest.fixture(scope="session")
async def fuzz_server(work_root: Path, template_dir: Path,
                      fuzz_log: Path) -> AsyncIterator[tuple[str, str]]:
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
        async with serving(tc.settings(), extra_args=("--no-worker",),
                           log_to=fuzz_log) as (url, _pid):
            yield url, token
    finally:
        await tc.cluster.down(purge=True)


@pytest.mark.slow
def test_no_request_gets_a_server_error_or_an_undocumented_answer(
        fuzz_server: tuple[str, str], fuzz_log: Path) -> None:
    url, token = fuzz_server
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    # schemathesis's pytest plugin predates pytest 9: drive each operation with
    # hypothesis directly instead
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1
        # 503 is a health check's answer by design (no replica here), as Patroni's: those
        # are held to their documented answers only
        checks = CONFORMANCE + ([] if operation.path.startswith("/health/")
                                else [not_a_server_error])
        try:
            fuzz(operation, headers, checks)
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert operations >= 20
    assert failures == []
    # nor anything the server logged as an error: a traceback, or a 500 it answered
    logged = fuzz_log.read_text(errors="replace")
    assert not [w for w in ("Traceback", "ERROR:", "answered 500") if w in logged], \
        logged[-3000:]


def fuzz(operation: Any, headers: dict[str, str], checks: list[Any]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def calls(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    calls()


def test_every_operation_documents_its_answers() -> None:
    document = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 shape: we never send it
    operations = [(method.upper(), path, operation)
                  for path, item in document["paths"].items()
                  for method, operation in item.items()]
    assert len(operations) >= 20
    for method, path, operation in operations:
        where = f"{method} {path}"
        answers = operation["responses"]
        success = [code for code in answers if code.startswith("2")]
        assert success, f"{where}: no success answer documented"
        for code in success:
            content = answers[code].get("content", {})
            assert content, f"{where} {code}: no media type"
            for media_type, described in content.items():
                schema = described.get("schema", {})
                if media_type == "application/json":
                    assert "$ref" in schema, f"{where} {code}: no response model"
                    assert schema["$ref"].rsplit("/", 1)[1] in schemas
                else:  # CSV, Prometheus text, the photo
                    assert schema.get("type") == "string", f"{where} {code}: {media_type}"
        for code, answer in answers.items():
            if code.startswith("4") or (code == "503" and path.startswith("/v1")):
                assert answer["content"] == {"application/problem+json": {"schema": PROBLEM}}, (
                    f"{where} {code}")
        if path.startswith("/v1"):
            assert "503" in answers, f"{where}: the database can be away"
            if operation.get("parameters") or operation.get("requestBody"):
                assert "400" in answers, f"{where}: bad input is a 400"
