"""Shared fixtures. TEMPORARY: empty_database uses the machine's PostgreSQL on 5432 until the
session cluster fixture lands."""

import uuid

import asyncpg
import pytest


@pytest.fixture
async def empty_database():
    """DSN of a new, empty database whose user may create tables; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
