"""`db freeze` / `thaw`: every write path of the application role stops at once (the
data layer, direct SQL even after `SET default_transaction_read_only = off`, a
transaction already open), reads keep working, the state is visible to any role, and
thaw gives back exactly the privileges there were. Always thawed in `finally`: the
session cluster is shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.state import APP, MONITOR
from cardmint.db import Database
from cardmint.db.errors import translate
from cardmint.errors import (
    DatabaseError,
    DatabaseUnavailable,
    Frozen,
    PermissionDenied,
    UsageError,
)
from cardmint.ops import freeze
from cardmint.ops.backups.restore_check import verify_restored
from support import TestCluster, poll

ROOT = Path(__file__).resolve().parent.parent

PRIVILEGES_SQL = """
SELECT c.oid::regclass::text AS relation, a.privilege_type, a.is_grantable,
       a.grantor::regrole::text AS grantor
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE a.grantee = 'cardmint_app'::regrole
UNION ALL
SELECT c.oid::regclass::text || '.' || att.attname, a.privilege_type, a.is_grantable,
       a.grantor::regrole::text
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
CROSS JOIN LATERAL aclexplode(att.attacl) a
WHERE a.grantee = 'cardmint_app'::regrole
ORDER BY 1, 2
"""


def test_a_refused_privilege_alone_is_not_called_a_freeze() -> None:
    """Issue 15, item 9: every "permission denied for table" was reported as a freeze.
    Alone, the refusal is PermissionDenied naming the table; only the database can say
    whether a freeze is in force (`diagnose`, tested below on the cluster)."""
    refused = translate(asyncpg.InsufficientPrivilegeError("permission denied for table items"))
    assert type(refused) is PermissionDenied and refused.relation == "items"
    assert "frozen" not in str(refused)
    ddl = translate(asyncpg.InsufficientPrivilegeError("permission denied for schema public"))
    assert type(ddl) is PermissionDenied and ddl.relation is None
    assert isinstance(ddl, DatabaseError) and not isinstance(ddl, DatabaseUnavailable)


async def test_a_missing_grant_names_the_table_and_the_role(pg: TestCluster,
                                                            db: Database) -> None:
    """A table made by hand as the superuser (`cardmint cluster connect`): the application
    role may not touch it, and no freeze is in force, so nothing says "frozen"."""
    admin = await pg.admin()
    try:
        await admin.execute("CREATE TABLE by_hand (x int)")
        attempts = [db.execute("INSERT INTO by_hand VALUES (1)"),
                    db.fetchval("SELECT count(*) FROM by_hand")]
        for attempt in attempts:
            with pytest.raises(PermissionDenied) as refused:
                await attempt
            assert "by_hand" in str(refused.value) and APP in str(refused.value)
            assert "frozen" not in str(refused.value) and refused.value.role == APP
        with pytest.raises(PermissionDenied, match="by_hand") as refused:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO by_hand VALUES (1)")
        assert "frozen" not in str(refused.value)
        # frozen, the same refusal on a CardMint table is the freeze
        await freeze.freeze(pg.settings(), reason="test", by="tester")
        try:
            with pytest.raises(Frozen, match="frozen"):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO incidents (title, severity) "
                                     "VALUES ('no', 'P2')")
        finally:
            await freeze.thaw(pg.settings())
    finally:
        await admin.execute("DROP TABLE IF EXISTS by_hand")
        await admin.close()


async def test_restore_verification_counts_around_a_table_the_owner_cannot_read(
        pg: TestCluster, catalog: Database) -> None:
    """`backup restore --repoint` refused a copy whose verification could not count a
    table the superuser had made: now it is named in a warning, and nothing says frozen."""
    admin = await pg.admin()
    try:
        await admin.execute("CREATE TABLE made_by_hand (x int)")
        report = await verify_restored(pg.settings())
    finally:
        await admin.execute("DROP TABLE IF EXISTS made_by_hand")
        await admin.close()
    checks = {c["name"]: c for c in report["checks"]}
    assert "connect" not in checks, checks
    assert checks["row_counts"]["ok"] and "made_by_hand" in checks["row_counts"]["detail"]
    assert checks["promoted"]["ok"] and checks["not_frozen"]["ok"] and checks["schema"]["ok"]
    assert report["row_counts"]["incidents"] >= 0 and "made_by_hand" not in report["row_counts"]
    assert "writes are frozen" not in json.dumps(report["checks"]) and report["ok"]


async def app_conn(pg: TestCluster, role: str = APP) -> asyncpg.Connection:
    primary = pg.cluster.state().primary
    return await asyncpg.connect(host=primary.host, port=primary.port, user=role,
                                 password=pg.password(role), database="cardmint")


async def test_freeze_stops_every_write_and_thaw_restores_exactly(pg: TestCluster,
                                                                 db: Database) -> None:
    admin = await pg.admin()
    before = [dict(r) for r in await admin.fetch(PRIVILEGES_SQL)]
    pending = await app_conn(pg)  # a write in flight when the freeze comes
    tx = pending.transaction()
    await tx.start()
    await pending.execute("INSERT INTO incidents (title, severity) VALUES ('in flight', 'P2')")
    direct = await app_conn(pg)
    try:
        report = await freeze.freeze(pg.settings(), reason="data loss suspected", by="tester")
        assert report["frozen"] and not report["already"]
        assert report["sessions_ended"] >= 1 and report["privileges_revoked"] > 0

        # the open transaction was ended: what it wrote never commits
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                            asyncpg.AdminShutdownError, asyncpg.InternalClientError,
                            ConnectionError)):
            await pending.execute("SELECT 1")
        assert await admin.fetchval(
            "SELECT count(*) FROM incidents WHERE title = 'in flight'") == 0

        # the data layer: a 503-kind error with the reason; reads still work
        with pytest.raises(Frozen, match="frozen"):
            await db.execute("INSERT INTO incidents (title, severity) VALUES ('no', 'P2')")
        with pytest.raises(DatabaseUnavailable):
            async with db.transaction() as t:
                await t.execute("UPDATE incidents SET notes = 'no'")
        assert await db.fetchval("SELECT count(*) FROM incidents") >= 0

        # direct SQL as the app role, even with the read-only default switched off
        await direct.execute("SET default_transaction_read_only = off")
        for statement in ("INSERT INTO incidents (title, severity) VALUES ('no', 'P2')",
                          "UPDATE incidents SET notes = 'no'", "DELETE FROM incidents",
                          "SELECT nextval(pg_get_serial_sequence('incidents', 'id'))",
                          "COPY incidents (title, severity) FROM STDIN"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await direct.execute(statement)
        # nor can it give the privilege back to itself (the server only warns)
        await direct.execute(f"GRANT INSERT ON incidents TO {APP}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await direct.execute("INSERT INTO incidents (title, severity) VALUES ('no', 'P2')")
        assert await direct.fetchval("SELECT count(*) FROM incidents") >= 0

        # visible to any role (health asks with the monitoring role), on the replica too
        monitor = await app_conn(pg, MONITOR)
        replica = await pg.admin("replica")
        try:
            assert await freeze.is_frozen(monitor)
            state = await freeze.freeze_state(monitor)
            assert state["reason"] == "data loss suspected" and state["by"] == "tester"
            assert await poll(lambda: freeze.is_frozen(replica))
        finally:
            await monitor.close()
            await replica.close()
        again = await freeze.freeze(pg.settings(), reason="twice")
        assert again["already"] and again["reason"] == "data loss suspected"

        thawed = await freeze.thaw(pg.settings())
        assert thawed["was_frozen"] and thawed["grants_restored"] > 0
        assert [dict(r) for r in await admin.fetch(PRIVILEGES_SQL)] == before
        assert not await freeze.is_frozen(admin)
        await db.execute("INSERT INTO incidents (title, severity) VALUES ('thawed', 'P2')")
        await direct.execute("DELETE FROM incidents WHERE title = 'thawed'")
        assert (await freeze.thaw(pg.settings()))["was_frozen"] is False
    finally:
        await freeze.thaw(pg.settings())
        for conn in (pending, direct, admin):
            if not conn.is_closed():
                await conn.close()


async def test_thaw_gives_back_column_grants_and_freeze_refuses_a_public_grant(
        pg: TestCluster) -> None:
    admin = await pg.admin()
    try:
        await admin.execute("CREATE TABLE freeze_probe (id int, note text)")
        await admin.execute(f"GRANT SELECT, UPDATE (note) ON freeze_probe TO {APP}")
        before = [dict(r) for r in await admin.fetch(PRIVILEGES_SQL)]
        await freeze.freeze(pg.settings(), reason="columns")
        assert not await admin.fetchval(
            f"SELECT has_column_privilege('{APP}', 'freeze_probe', 'note', 'UPDATE')")
        await freeze.thaw(pg.settings())
        assert [dict(r) for r in await admin.fetch(PRIVILEGES_SQL)] == before

        await admin.execute("GRANT INSERT ON freeze_probe TO PUBLIC")
        with pytest.raises(UsageError, match="freeze_probe"):
            await freeze.freeze(pg.settings(), reason="leaky")
        assert not await freeze.is_frozen(admin)  # nothing half done
        assert [dict(r) for r in await admin.fetch(PRIVILEGES_SQL)] == before
    finally:
        await freeze.thaw(pg.settings())
        await admin.execute("DROP TABLE IF EXISTS freeze_probe")
        await admin.close()


def test_freeze_and_thaw_from_the_command_line(pg: TestCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(pg.home)

    def cardmint(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                              text=True, env=env, timeout=60, cwd=ROOT)

    try:
        done = cardmint("db", "freeze", "--reason", "drill", "--json")
        assert done.returncode == 0, done.stderr
        frozen = json.loads(done.stdout)
        assert frozen["frozen"] and frozen["reason"] == "drill" and frozen["role"] == APP
    finally:
        done = cardmint("db", "thaw", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["was_frozen"] is True


async def test_the_api_answers_a_frozen_write_with_503_and_the_reason(pg: TestCluster,
                                                                      db: Database) -> None:
    """API routes write through `Database`; its Frozen error becomes a 503 problem."""
    import httpx
    from fastapi import FastAPI

    from cardmint.api import problems

    app = FastAPI()
    problems.install(app)

    @app.post("/write")
    async def write() -> dict[str, str]:
        await db.execute("INSERT INTO incidents (title, severity) VALUES ('api', 'P2')")
        return {"ok": "yes"}

    @app.get("/read")
    async def read() -> dict[str, int]:
        return {"n": await db.fetchval("SELECT count(*) FROM incidents")}

    await freeze.freeze(pg.settings(), reason="api test")
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            refused = await client.post("/write")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
            assert "frozen" in refused.json()["detail"]
            assert (await client.get("/read")).status_code == 200
    finally:
        await freeze.thaw(pg.settings())


async def test_signed_in_reads_keep_working_while_frozen(pg: TestCluster, db: Database) -> None:
    """Issue 17 item 11: the token check recorded each use with a write, so during a
    freeze every signed-in page and authenticated GET answered 503. Its use is now
    recorded when it can be; reads are served either way (writes: the test above)."""
    import httpx

    from cardmint.api.app import create_app
    from cardmint.tokens import create_token
    from support import serving

    reader, _ = await create_token(db, owner="freeze-reader", scope="write")
    bearer = {"Authorization": f"Bearer {reader}"}
    await freeze.freeze(pg.settings(), reason="reads test")
    try:
        async with serving(create_app(pg.settings())) as client:
            client.base_url = httpx.URL("http://127.0.0.1")  # the cookie goes without Secure
            listed = await client.get("/v1/inventory/items", headers=bearer)
            assert listed.status_code == 200, listed.text
            signed = await client.post("/signin", data={"token": reader, "next": "/inventory"})
            assert signed.status_code == 303, signed.text
            page = await client.get("/inventory")
            assert page.status_code == 200 and "Inventory" in page.text
    finally:
        await freeze.thaw(pg.settings())
    used = await db.fetchval("SELECT last_used_at FROM api_tokens WHERE owner = $1",
                             "freeze-reader")
    assert used is None  # the freeze refused the bookkeeping, not the reader
