"""The security audit on a real cluster: a fresh one audits clean; every planted
weakness is reported with its severity."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cardmint import secretfile
from cardmint.cluster.home import secret_stores
from cardmint.cluster.pg import tls
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import APP, ROLES
from cardmint.config import secret
from cardmint.db import Database, migrate
from cardmint.errors import CardmintError, UsageError, ValidationError
from cardmint.ops.security.audit import audit, session_findings
from cardmint.ops.security.rotate import rotate
from support import TestCluster, poll, start_cluster


@pytest.fixture(scope="module")
async def audited(work_root: Path, template_dir: Path):
    tc = await start_cluster(work_root, template_dir, "security", replicas=1)
    try:
        await asyncio.to_thread(migrate.upgrade, secret(tc.settings().migration_url))
        yield tc
    finally:
        await tc.cluster.down(purge=True)


async def test_a_fresh_cluster_audits_clean(audited: TestCluster) -> None:
    report = await audit(audited.settings())
    assert [(f.id, f.object) for f in report.findings] == []
    assert report.status == "ok" and report.exit_code == 0


# What an attacker (or a hurried operator) leaves behind, planted as the superuser: each is
# found with its severity and a fix. (node, SQL); "replica" plants are made on the replica.
PLANTS = [
    ("primary", "CREATE ROLE rogue SUPERUSER LOGIN PASSWORD 'x' VALID UNTIL 'infinity'"),
    ("primary", "CREATE ROLE nopass LOGIN"),
    ("primary", "CREATE ROLE soon LOGIN PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b' "
                "VALID UNTIL '{in_five_days}'"),
    ("primary", "CREATE ROLE intruder LOGIN PASSWORD 'intruder-typed-this-1' "
                "VALID UNTIL '{in_five_days}'"),
    ("primary", "GRANT pg_execute_server_program TO cardmint_app"),
    ("primary", "GRANT pg_write_server_files TO cardmint_ro"),
    ("primary", "GRANT pg_read_server_files TO cardmint_ro"),
    ("primary", "GRANT pg_write_all_data TO cardmint_monitor"),
    ("primary", "GRANT pg_read_all_data TO cardmint_monitor"),
    ("primary", "GRANT cardmint_owner TO cardmint_app"),
    ("primary", "ALTER ROLE cardmint_ro CREATEROLE"),
    ("primary", "ALTER ROLE cardmint_app CREATEDB"),
    ("primary", "ALTER ROLE cardmint_owner BYPASSRLS"),
    ("primary", "ALTER ROLE cardmint_monitor REPLICATION"),
    ("primary", "GRANT SELECT ON captures TO PUBLIC"),
    ("primary", "GRANT TRUNCATE ON captures TO cardmint_ro"),
    ("primary", "GRANT UPDATE (scope) ON api_tokens TO cardmint_ro"),
    ("primary", "CREATE SCHEMA side"),
    ("primary", "CREATE TABLE side.stash (x int)"),
    ("primary", "GRANT INSERT ON side.stash TO PUBLIC"),
    ("primary", "GRANT CREATE ON SCHEMA side TO cardmint_ro"),
    ("primary", "CREATE FUNCTION public.elevate() RETURNS int LANGUAGE sql "
                "SECURITY DEFINER AS 'SELECT 1'"),
    ("primary", "ALTER DEFAULT PRIVILEGES FOR ROLE cardmint_owner GRANT SELECT ON TABLES "
                "TO PUBLIC"),
    ("primary", "CREATE EXTENSION dblink"),
    ("primary", "GRANT CREATE ON SCHEMA public TO cardmint_app"),
    ("primary", "ALTER TABLE prices OWNER TO cardmint_app"),
    ("primary", "ALTER ROLE cardmint_app SET log_statement = 'mod'"),
    ("primary", "ALTER SYSTEM SET password_encryption = 'md5'"),
    ("primary", "ALTER SYSTEM SET log_statement = 'all'"),
    # a password typed into a logged setting: the log and pg_stat_statements keep it
    ("primary", "ALTER SYSTEM SET primary_conninfo = 'host=h password=typed-into-a-setting'"),
    ("replica", "ALTER SYSTEM SET log_min_duration_statement = 0"),
]
UNDO = [
    "DROP ROLE IF EXISTS rogue", "DROP ROLE IF EXISTS nopass", "DROP ROLE IF EXISTS soon",
    "DROP ROLE IF EXISTS intruder",
    "REVOKE pg_execute_server_program FROM cardmint_app",
    "REVOKE pg_write_server_files, pg_read_server_files FROM cardmint_ro",
    "REVOKE pg_write_all_data, pg_read_all_data FROM cardmint_monitor",
    "REVOKE cardmint_owner FROM cardmint_app",
    "ALTER ROLE cardmint_ro NOCREATEROLE", "ALTER ROLE cardmint_app NOCREATEDB",
    "ALTER ROLE cardmint_owner NOBYPASSRLS", "ALTER ROLE cardmint_monitor NOREPLICATION",
    "REVOKE SELECT ON captures FROM PUBLIC", "REVOKE TRUNCATE ON captures FROM cardmint_ro",
    "REVOKE UPDATE (scope) ON api_tokens FROM cardmint_ro",
    "DROP SCHEMA IF EXISTS side CASCADE", "DROP FUNCTION IF EXISTS public.elevate()",
    "ALTER DEFAULT PRIVILEGES FOR ROLE cardmint_owner REVOKE SELECT ON TABLES FROM PUBLIC",
    "DROP EXTENSION IF EXISTS dblink",
    "REVOKE CREATE ON SCHEMA public FROM cardmint_app",
    "ALTER TABLE prices OWNER TO cardmint_owner",
    "ALTER ROLE cardmint_app RESET log_statement",
    "ALTER SYSTEM RESET password_encryption", "ALTER SYSTEM RESET log_statement",
    "ALTER SYSTEM RESET primary_conninfo", "DELETE FROM api_tokens WHERE owner = 'planted'",
    "SELECT pg_reload_conf()", "SELECT pg_stat_statements_reset()",
]
EXPECTED = {  # (id, object): severity
    ("superuser", "role rogue"): "P1",
    ("unknown_login_role", "role rogue"): "P1",
    ("password_without_expiry", "role rogue"): "P2",
    ("login_without_password", "role nopass"): "P1",
    ("unknown_login_role", "role intruder"): "P1",
    ("password_expiring", "role soon"): "P1",
    ("dangerous_membership", "role cardmint_app"): "P0",
    ("cardmint_role_granted", "role cardmint_app"): "P0",
    ("role_createrole", "role cardmint_ro"): "P0",
    ("role_createdb", "role cardmint_app"): "P0",
    ("role_bypassrls", "role cardmint_owner"): "P1",
    ("role_replication", "role cardmint_monitor"): "P1",
    ("public_privilege", "table captures"): "P1",
    ("unexpected_privilege", "table captures"): "P1",
    ("column_privilege", "column api_tokens.scope"): "P1",
    ("public_privilege", "table side.stash"): "P1",
    ("schema_create", "schema side"): "P1",
    ("security_definer_public", "function public.elevate"): "P0",
    ("default_privilege_public", "default privileges of cardmint_owner"): "P1",
    ("untrusted_extension", "extension dblink"): "P1",
    ("app_role_can_create", "role cardmint_app"): "P1",
    ("app_role_owns_objects", "role cardmint_app"): "P1",
    ("log_statement", "setting log_statement for role cardmint_app"): "P1",
    ("password_encryption", "setting password_encryption on node1"): "P1",
    ("log_statement", "setting log_statement on node1"): "P1",
    ("log_min_duration_statement", "setting log_min_duration_statement on node2"): "P1",
    ("password_in_statements", "pg_stat_statements on node1"): "P0",
    ("hba_trust", "pg_hba.conf line 8 on node1"): "P0",
    ("hba_md5", "pg_hba.conf line 9 on node1"): "P1",
    ("hba_nossl", "pg_hba.conf line 10 on node1"): "P1",
    ("hba_password", "pg_hba.conf line 11 on node1"): "P1",
    ("hba_trust", "pg_hba.conf line 8 on node2"): "P0",  # the replica's own rules
    ("secret_file_mode", "file secrets.env"): "P1",
    ("backups_readable", "directory backups/"): "P1",
    ("admin_tokens_many", "API tokens"): "P2",
}


async def test_every_planted_finding_is_reported(audited: TestCluster) -> None:
    """Issue 15, item 2: each escalation an outside review planted went unreported."""
    state = audited.cluster.state()
    primary, replica = await audited.admin(), await audited.admin("replica")
    on = {"primary": primary, "replica": replica}
    hbas = {n.name: Path(n.datadir) / "pg_hba.conf" for n in state.nodes}
    original_hba = {name: path.read_text() for name, path in hbas.items()}
    secrets, backups = audited.home / "secrets.env", audited.home / "backups"
    stranger = None
    in_five_days = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    try:
        for where, sql in PLANTS:
            await on[where].execute(sql.format(in_five_days=in_five_days))
        await primary.execute(
            "INSERT INTO api_tokens (owner, scope, token_hash, prefix, created_at, "
            "last_used_at) SELECT 'planted', s, sha256(random()::text::bytea), 'cm_plant', "
            "now() - make_interval(days => d), now() - make_interval(days => u) FROM "
            "(VALUES ('admin', 100, 1), ('admin', 5, 40), ('admin', 1, 1), ('admin', 1, 1), "
            "('read', 200, 120)) v(s, d, u)")
        hbas["node1"].write_text(original_hba["node1"] + "host all all 0.0.0.0/0 trust\n"
                                 "host all all 10.0.0.0/8 md5\n"
                                 "hostnossl all all 10.0.0.0/8 scram-sha-256\n"
                                 "host all all 127.0.0.1/32 password\n")
        hbas["node2"].write_text(original_hba["node2"] + "host all all 127.0.0.1/32 trust\n")
        for conn in on.values():
            await conn.execute("SELECT pg_reload_conf()")
        secrets.chmod(0o644)
        backups.mkdir(mode=0o755, exist_ok=True)
        backups.chmod(0o755)
        stranger = await asyncpg.connect(
            host="127.0.0.1", port=state.primary.port, user=APP,
            password=audited.password(APP), database="cardmint",
            server_settings={"application_name": "mystery-tool"})
        await stranger.execute("BEGIN")

        report = await poll(lambda: _audit_finding(audited, "password_in_log"))
        found = {(f.id, f.object): f.severity for f in report.findings}
        missing = {k: v for k, v in EXPECTED.items() if found.get(k) != v}
        assert missing == {}, (missing, sorted(found))
        ids = {f.id: f for f in report.findings}
        for id_ in ("admin_token_old", "admin_token_idle", "token_unused",
                    "unknown_application", "idle_in_transaction", "password_in_log",
                    "hba_remote_without_tls"):
            assert id_ in ids, id_
        members = {f.detail.split(" is a member of ")[1].split(":")[0]
                   for f in report.findings if f.id == "dangerous_membership"}
        assert members == {"pg_execute_server_program", "pg_write_server_files",
                           "pg_read_server_files", "pg_write_all_data", "pg_read_all_data"}
        assert all(f.fix and f.severity in ("P0", "P1", "P2") for f in report.findings)
        default = next(f for f in report.findings if f.id == "default_privilege_public")
        assert "every new table cardmint_owner creates" in default.detail
        assert "ON TABLES FROM PUBLIC" in default.fix
        # neither a planted password nor a token's hash is repeated in the report
        text = json.dumps(report.to_dict())
        assert "typed-into-a-setting" not in text and "intruder-typed-this-1" not in text
        assert report.nodes == ["node1", "node2"]
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
        for name, path in hbas.items():
            path.write_text(original_hba[name])
        secrets.chmod(0o600)
        backups.chmod(0o700)  # pgBackRest's repo1: closed again
        for sql in UNDO:
            await primary.execute(sql)
        for sql in ("ALTER SYSTEM RESET log_min_duration_statement", "SELECT pg_reload_conf()",
                    "SELECT pg_stat_statements_reset()"):
            await replica.execute(sql)
        for node in state.nodes:  # the planted password stays in the log it reached
            for log in (Path(node.datadir) / "log").glob("*"):
                if b"typed-into-a-setting" in log.read_bytes():
                    log.write_bytes(b"")
        await primary.close()
        await replica.close()
    assert (await audit(audited.settings())).findings == []


async def _audit_finding(tc: TestCluster, wanted: str) -> Any:
    """The audit once `wanted` is among its findings (the log collector writes late)."""
    report = await audit(tc.settings())
    return report if any(f.id == wanted for f in report.findings) else None


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


async def test_rotation_leaves_no_new_password_anywhere(work_root: Path,
                                                        template_dir: Path) -> None:
    """Issue 15, item 1. After rotating every role, each new password is in the home's
    secret stores only (each mode 0600): not in any node's server log, not in
    pg_stat_statements on any node, not in any other file under $CARDMINT_HOME, not in
    what the commands printed. The replica's password file sits beside its data
    directory, so no base backup carries it."""
    tc = await start_cluster(work_root, template_dir, "rotation-leak", replicas=1)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
        env.update(CARDMINT_HOME=str(tc.home), COLUMNS="200")
        outputs = []
        for args in (("security", "rotate", "--force", "--json"),
                     ("security", "rotate", "--force"), ("cluster", "status", "--json")):
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "cardmint", *args],
                capture_output=True, text=True, env=env, timeout=180)
            assert done.returncode == 0, done.stderr[-2000:]
            outputs.append(done.stdout + done.stderr)
        passwords = [p for p in tc.cluster.passwords().values() if p]
        assert len(passwords) == len(ROLES)
        # the replica took the new replication password: it streams on a new login
        status = (await tc.cluster.status()).to_dict()
        assert [n["state"] for n in status["nodes"] if n["role"] == "replica"] == ["streaming"]

        statements = []
        for node in tc.cluster.state().nodes:
            conn = await tc.admin(node.name)
            try:
                statements += [r["query"] for r in await conn.fetch(
                    "SELECT query FROM pg_stat_statements")]
            finally:
                await conn.close()
        stores = set(secret_stores(tc.home))
        files = [p for p in tc.home.rglob("*") if p.is_file() and p not in stores]
        logs = [p for p in files if p.suffix in (".json", ".log")]
        assert len(logs) >= 4  # jsonlog and start-up log of each node
        hits = []
        for password in passwords:
            hits += [f"output {i}" for i, o in enumerate(outputs) if password in o]
            hits += [f"pg_stat_statements: {q[:60]}" for q in statements if password in q]
            needle = password.encode()
            hits += [str(p.relative_to(tc.home)) for p in files if needle in p.read_bytes()]
        assert hits == []
        # the files left out are the secret stores, each for its owner's eyes only
        assert tc.home / "secrets.env" in stores
        assert any(p.suffix == ".pgpass" for p in stores)  # the replica's password file
        for store in stores:
            assert store.stat().st_mode & 0o777 == 0o600, store
    finally:
        await tc.cluster.down(purge=True)


def test_an_operators_tls_key_is_never_readable_by_others(work_root: Path) -> None:
    """Issue 15, item 10: the operator's key was copied with the default umask, then
    chmod 0600. Here it arrives through a pipe (as `<(vault read ...)` gives it): while
    the copy waits for it, the file being written is already 0600."""
    source = work_root / "operator-tls"
    source.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(source / "k.pem"),
                    "-out", str(source / "c.pem"), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    pipe = source / "key.pipe"
    os.mkfifo(pipe)
    target = work_root / "tls-from-operator"
    old_umask = os.umask(0o022)
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            tls.ensure(target, OsUser.resolve("postgres"), cert=source / "c.pem", key=pipe)
        except BaseException as exc:  # reported by the test below
            failed.append(exc)

    worker = threading.Thread(target=copy)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not failed and not [p for p in target.glob("*key*")]:
            assert time.monotonic() < deadline, "the key file was never created"
            time.sleep(0.01)
        assert failed == []
        for early in target.glob("*key*"):  # being written: nobody else may read it
            assert early.stat().st_mode & 0o077 == 0, oct(early.stat().st_mode)
        with open(pipe, "wb") as writer:
            writer.write((source / "k.pem").read_bytes())
    finally:
        worker.join(timeout=10)
        os.umask(old_umask)
    assert failed == []
    key = target / "server.key"
    assert key.read_bytes() == (source / "k.pem").read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600 and not list(target.glob(".*part"))


async def test_down_purge_says_what_it_keeps(work_root: Path, template_dir: Path) -> None:
    """Issue 15, item 10: `cluster down --purge` left backups/ behind without a word."""
    tc = await start_cluster(work_root, template_dir, "purge", replicas=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env.update(CARDMINT_HOME=str(tc.home), COLUMNS="200")
    try:
        (tc.home / "backups").mkdir(mode=0o700, exist_ok=True)  # pgBackRest's repo1
        (tc.home / "backups" / "20261201T000000Z").mkdir()
        helped = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "down", "--help"],
            capture_output=True, text=True, env=env, timeout=60)
        assert "backups/" in helped.stdout and "are kept" in helped.stdout
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "down", "--purge"],
            capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "kept in the cluster's home: backups/" in done.stdout
        assert (tc.home / "backups" / "20261201T000000Z").is_dir()
        # only the key that decrypts backups/ stays in the secrets file
        assert set(secretfile.read(tc.home / "secrets.env")) == {"CARDMINT_BACKUP_CIPHER_PASS"}
        assert not (tc.home / "nodes").exists()
    finally:
        await tc.cluster.down(purge=True)
