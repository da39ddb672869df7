"""The security audit on a real cluster: a fresh one audits clean; every planted
weakness is reported with its severity."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.state import APP, ROLES
from cardmint.config import secret
from cardmint.db import Database, migrate
from cardmint.errors import CardmintError, UsageError, ValidationError
from cardmint.ops.security.audit import audit, session_findings
from cardmint.ops.security.rotate import rotate
from support import TestCluster, poll, start_cluster


@pytest.fixture(scope="module")
async def audited(work_root: Path, template_dir: Path):
    tc = await start_cluster(work_root, template_dir, "security", replicas=0)
    try:
        await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))
        yield tc
    finally:
        await tc.cluster.down(purge=True)


async def test_a_fresh_cluster_audits_clean(audited: TestCluster) -> None:
    report = await audit(audited.settings())
    assert [(f.id, f.object) for f in report.findings] == []
    assert report.status == "ok" and report.exit_code == 0


async def test_every_planted_finding_is_reported(audited: TestCluster) -> None:
    admin = await audited.admin()
    datadir = Path(audited.cluster.state().primary.datadir)
    hba = datadir / "pg_hba.conf"
    original_hba = hba.read_text()
    stranger = None
    in_five_days = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    try:
        for sql in (
            "CREATE ROLE rogue SUPERUSER LOGIN PASSWORD 'x' VALID UNTIL 'infinity'",
            "CREATE ROLE nopass LOGIN",
            f"CREATE ROLE soon LOGIN PASSWORD 'x' VALID UNTIL '{in_five_days}'",
            "GRANT SELECT ON captures TO PUBLIC",
            "GRANT TRUNCATE ON captures TO cardmint_ro",
            "GRANT CREATE ON SCHEMA public TO cardmint_app",
            "ALTER TABLE prices OWNER TO cardmint_app",
            "ALTER SYSTEM SET password_encryption = 'md5'",
        ):
            await admin.execute(sql)
        hba.write_text(original_hba + "host all all 0.0.0.0/0 trust\n"
                                      "host all all 10.0.0.0/8 md5\n")
        await admin.execute("SELECT pg_reload_conf()")
        stranger = await asyncpg.connect(
            host="127.0.0.1", port=audited.cluster.state().primary.port, user=APP,
            password=audited.password(APP), database="cardmint",
            server_settings={"application_name": "mystery-tool"})
        await stranger.execute("BEGIN")

        report = await audit(audited.settings())
        found = {(f.id, f.object): f.severity for f in report.findings}
        expected = {
            ("superuser", "role rogue"): "P1",
            ("password_without_expiry", "role rogue"): "P2",
            ("login_without_password", "role nopass"): "P1",
            ("password_expiring", "role soon"): "P1",
            ("public_privilege", "table captures"): "P1",
            ("unexpected_privilege", "table captures"): "P2",
            ("app_role_can_create", "role cardmint_app"): "P1",
            ("app_role_owns_objects", "role cardmint_app"): "P1",
            ("password_encryption", "setting password_encryption"): "P1",
        }
        for key, severity in expected.items():
            assert found.get(key) == severity, (key, found)
        ids = {f.id: f.severity for f in report.findings}
        assert ids["hba_trust"] == "P0" and ids["hba_weak_method"] == "P1"
        assert ids["hba_remote_without_tls"] == "P1"
        assert ids["unknown_application"] == "P2" and ids["idle_in_transaction"] == "P2"
        assert report.status == "critical" and report.exit_code == 2
        assert any(c["application"] == "mystery-tool" for c in report.to_dict()["connections"])

        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
        env["CARDMINT_HOME"] = str(audited.home)
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint", "security", "audit", "--json"],
            capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        doc = json.loads(done.stdout)
        assert doc["status"] == "critical"
        assert set(doc["findings"][0]) == {"id", "severity", "object", "detail", "fix"}
    finally:
        if stranger is not None:
            await stranger.close()
        hba.write_text(original_hba)
        for sql in ("DROP ROLE IF EXISTS rogue", "DROP ROLE IF EXISTS nopass",
                    "DROP ROLE IF EXISTS soon", "REVOKE SELECT ON captures FROM PUBLIC",
                    "REVOKE TRUNCATE ON captures FROM cardmint_ro",
                    "REVOKE CREATE ON SCHEMA public FROM cardmint_app",
                    "ALTER TABLE prices OWNER TO cardmint_owner",
                    "ALTER SYSTEM RESET password_encryption", "SELECT pg_reload_conf()"):
            await admin.execute(sql)
        await admin.close()
    assert (await audit(audited.settings())).findings == []


def test_a_remote_session_without_tls_is_a_finding() -> None:
    row = {"pid": 7, "usename": APP, "application_name": "cardmint/1",
           "client_addr": "192.0.2.10", "ssl": False, "state": "idle", "state_age_s": 1.0}
    assert [f.id for f in session_findings([row])] == ["connection_without_tls"]
    assert session_findings([{**row, "ssl": True}]) == []
    assert session_findings([{**row, "client_addr": "127.0.0.1"}]) == []


async def test_rotation_under_load_fails_no_request(work_root: Path, template_dir: Path) -> None:
    tc = await start_cluster(work_root, template_dir, "rotation", replicas=1)
    try:
        before = dict(tc.cluster.passwords())
        db = Database(tc.settings(pool_min=2, pool_max=8))
        await db.open(monitor=False)
        stop = asyncio.Event()
        done, failed = 0, []

        async def client() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    await db.fetchval("SELECT 1")
                    await db.fetchval("SELECT 1", stale_ok=True)
                    done += 1
                except CardmintError as exc:
                    failed.append(str(exc))

        async def churn() -> None:
            # new connections all the time, so the new password is really needed
            while not stop.is_set():
                await db.recycle()
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(client()) for _ in range(8)] + \
            [asyncio.create_task(churn())]
        try:
            await poll(lambda: done > 50)
            report = await rotate(tc.settings(), force=True)
            at_rotation = done
            await poll(lambda: done > at_rotation + 200)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await db.close()
        assert report.ok, report.to_dict()
        assert [r.role for r in report.rotations] == list(ROLES)
        assert failed == []
        after = tc.cluster.passwords()
        assert all(after[r] != before[r] for r in ROLES)
        assert all("password" not in r.to_dict() for r in report.rotations)
        # the replica streams with the new replication password
        status = (await tc.cluster.status()).to_dict()
        assert [n["state"] for n in status["nodes"] if n["role"] == "replica"] == ["streaming"]
        # the audit sees fresh expiries, and the old application password is refused
        assert (await audit(tc.settings())).findings == []
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host="127.0.0.1", port=tc.cluster.state().primary.port,
                                  user=APP, password=before[APP], database="cardmint")
    finally:
        await tc.cluster.down(purge=True)


async def test_rotation_refuses_outside_a_window_and_unknown_roles(audited: TestCluster) -> None:
    outside = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday noon
    with pytest.raises(UsageError, match="maintenance window"):
        await rotate(audited.settings(), now=outside)
    with pytest.raises(ValidationError):
        await rotate(audited.settings(), ["nobody"], force=True)


async def test_no_command_output_or_log_shows_a_password(pg: TestCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(pg.home), COLUMNS="200")
    commands = [
        ("cluster", "status"), ("cluster", "status", "--json"), ("cluster", "up", "--json"),
        ("health",), ("health", "--json"), ("stats", "--json", "--window", "0.2"),
        ("test-card", "--json"), ("security", "audit", "--json"), ("db", "current", "--json"),
        ("cluster", "connect", "nosuch"), ("maintenance", "status", "--json"),
    ]
    seen = []
    for args in commands:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint", *args], capture_output=True,
            text=True, env=env, timeout=120)
        seen.append(done.stdout + done.stderr)
    # a DSN pointing nowhere with a password in it, through an error path
    bad = dict(env, CARDMINT_DATABASE_URL="postgresql://cardmint_app:hunter22@127.0.0.1:1/x")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "test-card", "--json"],
        capture_output=True, text=True, env=bad, timeout=120)
    seen.append(done.stdout + done.stderr)
    seen += [p.read_text(errors="replace") for p in (pg.home / "logs").iterdir()]
    text = "\n".join(seen)
    secrets = [p for p in pg.cluster.passwords().values() if p] + ["hunter22"]
    assert not [s for s in secrets if s in text]
    exposed = re.findall(r"postgres(?:ql)?://[^:/@\s]+:([^@\s]+)@", text)
    assert [p for p in exposed if p != "***"] == []


async def test_tls_with_verify_full_and_hostssl_beyond_loopback(audited: TestCluster) -> None:
    state = audited.cluster.state()
    ca = audited.home / "tls" / "ca.crt"
    conn = await asyncpg.connect(
        f"postgresql://{APP}@127.0.0.1:{state.primary.port}/cardmint"
        f"?sslmode=verify-full&sslrootcert={ca}", password=audited.password(APP))
    try:
        assert await conn.fetchval(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    finally:
        await conn.close()
    admin = await audited.admin()
    try:
        rules = await admin.fetch("SELECT type, address FROM pg_hba_file_rules")
    finally:
        await admin.close()
    assert all(r["type"] == "hostssl" or r["address"] == "127.0.0.1" for r in rules)
    assert (audited.home / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
