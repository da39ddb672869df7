"""pgBackRest's repositories off the database host: repo2 on "another host" (a network
namespace of this module's own running `pgbackrest server` over TLS, reached only at its
bridge address), encryption at rest, and the restore drill that loses the host.

The repository host is stopped by PID and its namespace torn down by name in the
fixture's `finally`; stale cmbr-* namespaces of a killed session are swept first.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import boto3
import pytest

from cardmint.cluster.home import free_ports
from cardmint.cluster.pg import backrest, process, repohost, tls
from cardmint.cluster.pg.admin import NodeAdmin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.state import SUPERUSER
from cardmint.db import Database
from cardmint.ops.backups import backup, pitr, store
from cardmint.ops.drills import restore_drill
from support import migrated_cluster, poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("pgbackrest") is None,
                                reason="needs root (network namespaces) and pgbackrest")


@pytest.fixture(scope="module")
async def remote(work_root: Path, template_dir: Path):
    """A cluster (the sample catalog: restore's test-card needs a card) whose repo2 is a
    repository host in a namespace of its own."""
    repohost.sweep()
    async with migrated_cluster(work_root, template_dir, "backrest", replicas=0,
                                sample=True) as tc:
        settings = tc.settings()
        user = OsUser.resolve(settings.pg_os_user)
        password = NodeAdmin(settings).passwords()[SUPERUSER]
        host = repohost.start(work_root / "repohost", home=tc.home, tls_dir=tc.home / "tls",
                              user=user, cipher_pass=backrest.cipher_pass(settings.secrets_path),
                              password=password)
        try:
            backrest.add_repo(tc.home, settings.secrets_path, repohost.client_repo(
                host, tc.home / "tls", backrest.Paths(tc.home).root / "tls", user))
            store.site(settings).configure()
            backrest.stanza_create(tc.home, user, password)
            yield tc, host
        finally:
            repohost.stop(host)
    assert not [ns for ns in repohost.namespaces() if ns == host.netns]
    assert not backrest.async_pids(tc.home)  # `cluster down` stopped archive-push too


def test_the_repository_host_listens_only_at_its_bridge_address(remote) -> None:
    tc, host = remote
    assert host.netns.startswith("cmbr-") and host.address.startswith("10.232.")
    assert host.netns in repohost.namespaces()
    conf = (backrest.Paths(tc.home).conf).read_text()
    assert f"repo2-host={host.address}" in conf and "repo2-host-type=tls" in conf
    assert oct(backrest.Paths(tc.home).conf.stat().st_mode & 0o777) == "0o600"
    server = (Path(host.root) / "pgbackrest.conf").read_text()
    assert f"tls-server-address={host.address}" in server


async def test_remote_repository_backup_verify_and_pitr(remote, work_root: Path) -> None:
    tc, _ = remote
    made = await backup.create(tc.settings(), repo=2)
    assert made["repos"] == [2] and made["repo"] == 2
    checked = await backup.verify(tc.settings(), made["id"])
    assert checked["ok"], checked["files"]["detail"][-800:]
    db = Database(tc.settings())
    await db.open(monitor=False)
    try:
        await db.execute("INSERT INTO incidents (title, severity) "
                         "SELECT 'remote ' || g, 'P1' FROM generate_series(1, 3) g")
        moment = await db.fetchval("SELECT clock_timestamp()")
        await db.execute("DELETE FROM incidents WHERE title LIKE 'remote %'")
    finally:
        await db.close()
    async with _restored(tc, work_root / "restored-remote", moment, 2, made["id"]) as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM incidents WHERE title LIKE 'remote %'") == 3
        # it fetched WAL from repo2 alone
        assert "--repo=2" in await conn.fetchval("SELECT setting FROM pg_settings "
                                                 "WHERE name = 'restore_command'")


@asynccontextmanager
async def _restored(tc, to: Path, moment: object, repo: int,
                    backup_id: str) -> AsyncIterator[asyncpg.Connection]:
    """The cluster restored from `repo` to `moment` (from backup `backup_id`), as its
    superuser; stopped and deleted after the block."""
    report = None
    try:
        report = await pitr.restore(tc.settings(), to=to, target_time=moment, repo=repo)
        assert report["ok"] and report["backup_id"] == backup_id, report
        conn = await tc.restored(report["port"])
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        if report is not None:
            await pitr.discard(tc.settings(), report["node"])
        shutil.rmtree(to, ignore_errors=True)


async def test_encrypted_repositories_hold_no_readable_page(remote) -> None:
    tc, host = remote
    marker = f"cardmint-plaintext-{uuid.uuid4().hex}"
    conn = await tc.admin()
    try:
        await conn.execute("INSERT INTO incidents (title, severity) VALUES ($1, 'P2')", marker)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    made = await backup.create(tc.settings())
    assert made["repos"] == [1, 2]
    conn = await tc.admin()
    try:
        await conn.execute("SELECT pg_switch_wal()")
    finally:
        await conn.close()
    needle = marker.encode()
    primary = Path(store.site(tc.settings()).state.primary.datadir)
    assert _holds(primary / "base", needle), "the grep must see the plain page"
    for repo in (tc.home / "backups", Path(host.repo_path)):
        assert any(p.is_file() for p in repo.rglob("*"))
        assert not _holds(repo, needle), f"{repo} holds a readable page"
    key = backrest.cipher_pass(tc.settings().secrets_path).encode()
    for logs in (backrest.Paths(tc.home).root / "log", Path(host.root) / "log"):
        assert not _holds(logs, key), f"the cipher key is in {logs}"


def _holds(root: Path, needle: bytes) -> bool:
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    return True
            except OSError:
                continue
    return False


# -- object storage: a local S3-compatible server (tests/s3_standin.py) ---------------

@pytest.fixture
async def s3(remote, work_root: Path):
    """repo3 in an S3 bucket of a local S3 server (moto, behind TLS from the cluster's CA,
    on loopback); stopped by PID and the repository removed from the configuration after."""
    tc, _ = remote
    settings = tc.settings()
    certs = work_root / "s3"
    crt, key = tls.issue(tc.home / "tls", certs, "s3", cn="127.0.0.1",
                         alt_names="DNS:127.0.0.1,IP:127.0.0.1")
    port = free_ports(1)[0]
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [sys.executable, str(Path(__file__).parent / "s3_standin.py"), str(port), str(crt),
         str(key)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await poll(lambda: _accepts(port), timeout=30)
        client = boto3.client("s3", endpoint_url=f"https://127.0.0.1:{port}",
                              aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                              region_name="us-east-1", verify=str(tc.home / "tls" / "ca.crt"))
        await asyncio.to_thread(client.create_bucket, Bucket="cardmint-backups")
        backrest.add_repo(tc.home, settings.secrets_path, backrest.Repo(3, "s3", {
            "s3-endpoint": "127.0.0.1", "storage-port": str(port),
            "s3-bucket": "cardmint-backups", "s3-region": "us-east-1", "s3-uri-style": "path",
            "path": "/cardmint", "storage-ca-file": str(tc.home / "tls" / "ca.crt")}),
            {"s3-key": S3_KEY, "s3-key-secret": S3_SECRET})
        store.site(settings).configure()
        password = NodeAdmin(settings).passwords()[SUPERUSER]
        await asyncio.to_thread(backrest.stanza_create, tc.home,
                                OsUser.resolve(settings.pg_os_user), password)
        yield tc, client
    finally:
        backrest.remove_repo(tc.home, 3)
        store.site(settings).configure()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


S3_KEY, S3_SECRET = "cardmint-test-key", f"s3-secret-{uuid.uuid4().hex}"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


async def test_s3_repository_backup_verify_and_pitr(s3, work_root: Path) -> None:
    tc, client = s3
    marker = f"cardmint-s3-plaintext-{uuid.uuid4().hex}"
    conn = await tc.admin()
    try:
        await conn.execute("INSERT INTO incidents (title, severity) VALUES ($1, 'P2')", marker)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    made = await backup.create(tc.settings(), kind="full", repo=3)
    assert made["repos"] == [3] and made["repo"] == 3
    checked = await backup.verify(tc.settings(), made["id"])
    assert checked["ok"], (checked["files"]["detail"][-500:], checked["wal"])
    conn = await tc.admin()
    try:
        await conn.execute("UPDATE incidents SET title = 'changed' WHERE title = $1", marker)
        moment = await conn.fetchval("SELECT clock_timestamp()")
        await conn.execute("DELETE FROM incidents WHERE title = 'changed'")
    finally:
        await conn.close()
    async with _restored(tc, work_root / "restored-s3", moment, 3, made["id"]) as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM incidents WHERE title = 'changed'") == 1
    # the bucket holds the repository, encrypted: no object shows the plain value
    objects = await asyncio.to_thread(_objects, client)
    assert len(objects) > 10
    assert not [name for name, body in objects.items() if marker.encode() in body]
    logs = backrest.Paths(tc.home).root / "log"
    assert not _holds(logs, S3_SECRET.encode()), "the S3 secret is in pgBackRest's log"


def _objects(client) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="cardmint-backups"):
        for item in page.get("Contents", []):
            out[item["Key"]] = client.get_object(Bucket="cardmint-backups",
                                                 Key=item["Key"])["Body"].read()
    return out


async def test_the_host_is_lost_and_restored_from_the_remote_repository(remote) -> None:
    """Last: it deletes the cluster's node and repo1, and repoints to the restored copy."""
    tc, _ = remote
    old = store.site(tc.settings()).state.primary
    report = await restore_drill(tc.settings(), force=True)
    assert report["ok"], {k: report.get(k) for k in ("error", "restore", "health",
                                                     "lost_archived_writes", "lost_host")}
    assert report["lost_archived_writes"] == 0
    assert report["archived_acknowledged_writes"] > 0
    assert report["acknowledged_writes"] >= report["archived_acknowledged_writes"]
    assert report["recovery_s"] > 0 and report["rpo_s"] is not None
    assert _gone_and_reported(old.datadir, report["markdown"])
    # the restored copy is the primary now, with the drill's report in `drills`
    s = store.site(tc.settings())
    assert s.state.primary.name == report["restored_node"]
    conn = await tc.admin()
    try:
        stored = await conn.fetchval("SELECT report FROM drills WHERE id = $1", report["id"])
        assert json.loads(stored)["run"] == report["run"]
    finally:
        await conn.close()
    assert process.postmaster_pid(Path(s.state.primary.datadir)) is not None


def _gone_and_reported(datadir: str, markdown: str) -> bool:
    return not Path(datadir).exists() and Path(markdown).read_text().startswith(
        "# Restore drill")
