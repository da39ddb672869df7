"""The Patroni engine on real Patroni, etcd and PostgreSQL: two members on loopback with
synchronous replication, driven through Patroni's REST API. A leader dies as a host
would (SIGKILL of its Patroni and its postmaster); Patroni fails over by itself once the
leader key expires (ttl 20 s), so this file runs two unplanned failovers only: one here,
one in the drill."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from cardmint.cluster.patroni import rest
from cardmint.cluster.patroni.engine import PatroniCluster
from cardmint.cluster.pg import process
from cardmint.cluster.state import FENCED, REPLICATION, SUPERUSER
from cardmint.db import Database
from cardmint.errors import ClusterError
from cardmint.ops.drills.frame import CONTRACT
from cardmint.ops.drills.probe import WriteProbe, lost, prepare_probe_table
from cardmint.ops.security.rotate import rotate
from support import make_settings, migrate_with_sample, poll

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
FAILOVER_TIMEOUT_S = 60.0  # ttl 20 s, then a loop and the promotion


def _missing() -> str | None:
    settings = make_settings(Path("/nonexistent"))
    if not (settings.patroni_bin / "patroni").is_file():
        return f"no Patroni in {settings.patroni_bin} (make patroni)"
    if shutil.which(settings.etcd) is None:
        return "no etcd (make patroni; Debian: etcd-server)"
    try:  # Patroni runs as the PostgreSQL OS user: a checkout under a mode-700 directory
        process.OsUser.resolve(settings.pg_os_user).check_reachable(settings.patroni_bin)
    except ClusterError as exc:
        return str(exc)
    return None


def our_pids(cluster: PatroniCluster) -> set[int]:
    """Every live process of the cluster: any whose command line names its home (etcd,
    Patroni, postmasters) and any working in a data directory (backends)."""
    home = str(cluster.home).encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if home in cmd and process.alive(int(entry)):
            found.add(int(entry))
    state = cluster.state()
    for node in state.nodes if state else []:
        found |= process.datadir_pids(Path(node.datadir))
    return found


def listening(pids: set[int]) -> list[str]:
    """Local addresses that these processes listen on (TCP)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    addrs = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            addrs.append(line.split()[3])
    return addrs


@pytest.fixture(scope="module")
async def patroni_cluster(work_root: Path) -> AsyncIterator[PatroniCluster]:
    """Two members, synchronous, migrated, with the sample catalog (test-card needs it)."""
    why = _missing()
    if why:
        pytest.skip(why)
    cluster = PatroniCluster(make_settings(work_root / "patroni"))
    try:
        report = await cluster.up(replicas=1, sync=True)
        assert report.created and report.started == ["etcd", "node1", "node2"]
        await migrate_with_sample(make_settings(cluster.home))
        yield cluster
    finally:
        await cluster.down(purge=True)
    assert our_pids(cluster) == set()


async def leader_of(cluster: PatroniCluster) -> str | None:
    try:
        return rest.leader(await cluster.members())
    except Exception:
        return None


async def rows(cluster: PatroniCluster, node: str, run: str) -> set[int]:
    n = cluster.state().node(node)
    conn = await asyncpg.connect(host=n.host, port=n.port, user=SUPERUSER, database="cardmint",
                                 password=cluster.passwords()[SUPERUSER])
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM drill.probe WHERE run = $1",
                                                  run)}
    finally:
        await conn.close()


async def probing(cluster: PatroniCluster, run: str) -> tuple[Database, WriteProbe]:
    settings = make_settings(cluster.home)
    await prepare_probe_table(settings)
    db = Database(settings.model_copy(update={"pool_min": 0, "pool_max": 2}))
    await db.open(monitor=False)
    return db, WriteProbe(db, run)


async def test_up_gives_a_leader_and_a_streaming_sync_replica(
        patroni_cluster: PatroniCluster) -> None:
    status = (await patroni_cluster.status()).to_dict()
    assert status["provider"] == "patroni" and status["sync"] is True
    assert status["leader"] == "node1" and status["dcs"]["running"] is True
    nodes = {n["name"]: n for n in status["nodes"]}
    assert (nodes["node1"]["role"], nodes["node1"]["state"]) == ("primary", "accepting writes")
    assert (nodes["node2"]["role"], nodes["node2"]["state"]) == ("replica", "streaming")
    assert nodes["node1"]["patroni"]["role"] == "leader"
    assert (nodes["node2"]["patroni"]["role"], nodes["node2"]["patroni"]["state"]) == (
        "sync_standby", "streaming")
    assert nodes["node1"]["replicas"] == [
        {"application_name": "node2", "state": "streaming", "sync_state": "sync"}]

    # what the local engine sets up, Patroni keeps: checksums, jsonlog, the archive, SCRAM
    conn = await asyncpg.connect(host="127.0.0.1", port=nodes["node1"]["port"],
                                 user=SUPERUSER, database="cardmint",
                                 password=patroni_cluster.passwords()[SUPERUSER])
    try:
        settings = {r["name"]: r["setting"] for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
            ["data_checksums", "log_destination", "archive_mode", "listen_addresses",
             "shared_preload_libraries", "password_encryption"])}
        verifiers = await conn.fetch("SELECT rolname, rolpassword FROM pg_authid "
                                     "WHERE rolcanlogin")
        hba = await conn.fetch("SELECT type, auth_method FROM pg_hba_file_rules")
    finally:
        await conn.close()
    assert settings == {"data_checksums": "on", "log_destination": "jsonlog",
                        "archive_mode": "on", "listen_addresses": "127.0.0.1",
                        "shared_preload_libraries": "pg_stat_statements",
                        "password_encryption": "scram-sha-256"}
    assert {r["rolname"] for r in verifiers} >= {"cardmint_app", "cardmint_owner",
                                                 "cardmint_replicator", "cardmint_monitor"}
    assert all(r["rolpassword"].startswith("SCRAM-SHA-256$") for r in verifiers)
    assert {r["auth_method"] for r in hba} == {"scram-sha-256"}

    # loopback only; Patroni's files hold passwords: 0600, the postgres OS user's
    pids = our_pids(patroni_cluster)
    addrs = listening(pids)
    assert len(addrs) >= 6 and all(a.startswith("127.0.0.1:") for a in addrs), addrs
    for name in ("node1", "node2"):
        info = patroni_cluster.config_path(name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        if os.geteuid() == 0:
            assert info.st_uid == process.OsUser.resolve("postgres").uid
    passwords = [p for p in patroni_cluster.passwords().values() if p]
    state_text = (patroni_cluster.home / "cluster.json").read_text()
    assert not any(p in state_text for p in passwords)

    # and through the CLI, as an operator asks
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "status", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**env, "CARDMINT_HOME": str(patroni_cluster.home)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["provider"] == "patroni"


async def test_pgbackrest_backs_up_the_leader_and_archives_its_wal(
        patroni_cluster: PatroniCluster) -> None:
    """The Patroni engine's WAL goes through pgBackRest's archive-push too."""
    from cardmint.ops.backups import backup

    settings = make_settings(patroni_cluster.home)
    made = await backup.create(settings)
    assert made["ok"] and made["type"] == "full" and made["node"] == "node1"
    checked = await backup.verify(settings, made["id"])
    assert checked["ok"], (checked["files"], checked["wal"])
    status = await backup.status(settings)
    assert status["archiver"]["archived_count"] > 0 and not status["archiver"]["failing"]


async def test_switchover_loses_no_acknowledged_write(patroni_cluster: PatroniCluster) -> None:
    before = await leader_of(patroni_cluster)
    db, probe = await probing(patroni_cluster, "switchover")
    task = asyncio.create_task(probe.loop())
    try:
        await probe.until(lambda: len(probe.acks) >= 20)
        report = await patroni_cluster.switchover()
        count = len(probe.acks)
        await probe.until(lambda: len(probe.acks) >= count + 20)  # writes go on
    finally:
        probe.stop()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()
    assert report.kind == "switchover" and report.old_primary == before
    assert report.new_primary != before
    assert report.rejoin is not None and report.rejoin.streaming is True
    assert report.sync_names == before  # Patroni made the old leader the sync standby
    assert await leader_of(patroni_cluster) == report.new_primary
    assert lost(probe.acks, await rows(patroni_cluster, report.new_primary, "switchover")) == []
    state = patroni_cluster.state()
    assert state.primary.name == report.new_primary  # cluster.json follows Patroni


async def test_failover_command_goes_through_patroni(patroni_cluster: PatroniCluster) -> None:
    """`cardmint cluster failover` with the leader alive: Patroni demotes it, promotes the
    standby, and the old leader follows by itself (no `rejoin` needed)."""
    before = await leader_of(patroni_cluster)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "cluster", "failover", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**env, "CARDMINT_HOME": str(patroni_cluster.home)})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "failover" and report["old_primary"] == before
    assert report["new_primary"] != before and report["fenced"] is False
    assert report["repointed"] == [before] and report["not_streaming"] == []
    assert await leader_of(patroni_cluster) == report["new_primary"]
    assert patroni_cluster.state().primary.name == report["new_primary"]


async def test_rotation_follows_into_patronis_configuration(
        patroni_cluster: PatroniCluster) -> None:
    """`security rotate` of the two roles Patroni logs in with: its configuration gets the
    new passwords, the replica logs in again with them, and a switchover still works."""
    old = patroni_cluster.passwords()
    report = await rotate(make_settings(patroni_cluster.home), [SUPERUSER, REPLICATION],
                          force=True)
    assert report.ok, report.to_dict()
    assert all("Patroni reloaded, 1 replica(s) logged in again" in r.detail
               for r in report.rotations)
    new = patroni_cluster.passwords()
    assert new[SUPERUSER] != old[SUPERUSER] and new[REPLICATION] != old[REPLICATION]
    for node in patroni_cluster.state().nodes:
        text = await asyncio.to_thread(patroni_cluster.config_path(node.name).read_text)
        assert new[REPLICATION] in text and old[REPLICATION] not in text
    switch = await patroni_cluster.switchover()
    assert switch.rejoin is not None and switch.rejoin.streaming is True


async def test_killed_leader_fails_over_by_itself_and_rejoins(
        patroni_cluster: PatroniCluster) -> None:
    state = patroni_cluster.state()
    old = state.node(await leader_of(patroni_cluster))
    patroni_pid = patroni_cluster.patroni_pid(old.name)
    postmaster = process.postmaster_pid(Path(old.datadir))
    assert patroni_pid and postmaster
    db, probe = await probing(patroni_cluster, "killed")
    task = asyncio.create_task(probe.loop())
    try:
        await probe.until(lambda: len(probe.acks) >= 20)
        os.kill(patroni_pid, signal.SIGKILL)  # the host is gone: nobody hands over
        os.kill(postmaster, signal.SIGKILL)
        killed_at = len(probe.acks)
        new = await poll(lambda: _new_leader(patroni_cluster, old.name),
                         timeout=FAILOVER_TIMEOUT_S, interval=0.2)
        # the application's own data layer writes on the new leader, no restart
        await probe.until(lambda: len(probe.acks) > killed_at + 10, timeout=FAILOVER_TIMEOUT_S)
    finally:
        probe.stop()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()
    assert new != old.name
    assert lost(probe.acks, await rows(patroni_cluster, new, "killed")) == []  # sync
    status = (await patroni_cluster.status()).to_dict()
    roles = {n["name"]: (n["role"], n["state"]) for n in status["nodes"]}
    assert roles[new] == ("primary", "accepting writes")
    assert roles[old.name] == ("replica", "fenced")  # out of every DSN until rejoin
    assert patroni_cluster.state().node(old.name).role == FENCED

    report = await patroni_cluster.rejoin(old.name)
    assert report.streaming and report.primary == new and report.method in ("rewind", "restart")
    status = (await patroni_cluster.status()).to_dict()
    nodes = {n["name"]: n for n in status["nodes"]}
    assert (nodes[old.name]["role"], nodes[old.name]["state"]) == ("replica", "streaming")
    assert nodes[old.name]["patroni"]["role"] == "sync_standby"
    assert await rows(patroni_cluster, old.name, "killed") == await rows(
        patroni_cluster, new, "killed")


async def _new_leader(cluster: PatroniCluster, old: str) -> str | None:
    lead = await leader_of(cluster)
    if lead is None or lead == old:
        return None
    node = cluster.state().node(lead)
    conn = await asyncpg.connect(host=node.host, port=node.port, user=SUPERUSER,
                                 database="postgres", password=cluster.passwords()[SUPERUSER])
    try:
        return None if await conn.fetchval("SELECT pg_is_in_recovery()") else lead
    finally:
        await conn.close()


async def test_the_drill_on_patroni_with_sync_loses_nothing(
        patroni_cluster: PatroniCluster) -> None:
    before = await leader_of(patroni_cluster)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cardmint", "drill", "failover", "--force",
                         "--json"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
        env={**env, "CARDMINT_HOME": str(patroni_cluster.home), "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert set(CONTRACT) <= set(report)
    assert report["ok"] is True and report["provider"] == "patroni" and report["sync"] is True
    assert report["lost_writes"] == 0 and report["acknowledged_writes"] > 40
    assert report["old_primary"] == before and report["new_primary"] != before
    assert report["in_recovery_after"] is False and report["rejoined"] is True
    assert report["health_severity"] != "P0" and report["test_card"] is True
    # the leader key outlives its dead holder by up to the ttl: that is the detection
    assert 10 < report["detection_s"] < 40 and 0 < report["promotion_s"] < 10
    assert report["write_outage_s"] >= report["detection_s"]
    passwords = [p for p in patroni_cluster.passwords().values() if p]
    assert not any(p in done.stdout + done.stderr for p in passwords)
    assert await leader_of(patroni_cluster) == report["new_primary"]


async def test_down_stops_every_process_by_pid_and_up_adopts(
        patroni_cluster: PatroniCluster) -> None:
    running = our_pids(patroni_cluster)
    assert len(running) >= 5  # etcd, two Patroni, two postmasters (and their children)
    report = await patroni_cluster.down()
    stopped = {s.node for s in report.stopped}
    assert stopped == {"node1 patroni", "node2 patroni", "etcd"}  # Patroni stops postgres
    await poll(lambda: not our_pids(patroni_cluster), timeout=10)
    assert not report.purged and (patroni_cluster.home / "nodes" / "node1").is_dir()

    # `up` again adopts the stopped cluster: etcd and both members start, sync again
    again = await patroni_cluster.up()
    assert again.adopted and sorted(again.started) == ["etcd", "node1", "node2"]
    status = (await patroni_cluster.status()).to_dict()
    assert sorted((n["role"], n["state"]) for n in status["nodes"]) == [
        ("primary", "accepting writes"), ("replica", "streaming")]
    assert any(n["patroni"]["role"] == "sync_standby" for n in status["nodes"])


# -- the configuration, as pure functions (no Patroni needed) ---------------------------


def test_patroni_gets_the_local_engines_settings_and_timing_rules(tmp_path: Path) -> None:
    from cardmint.cluster.patroni import conf
    from cardmint.cluster.pg import backrest

    archive = tmp_path / "pgbackrest"
    shared = conf.shared_parameters(archive)
    assert shared["archive_command"] == backrest.archive_command(archive)  # unquoted
    assert shared["log_destination"] == "jsonlog" and shared["wal_log_hints"] == "on"
    assert not set(conf.PATRONI_OWNED) & set(shared)
    dcs = conf.dcs_config(archive, sync=True, strict=False)
    assert dcs["ttl"] >= 20 and dcs["loop_wait"] >= 1 and dcs["retry_timeout"] >= 3
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert (dcs["synchronous_mode"], dcs["synchronous_mode_strict"]) == (True, False)
    assert conf.dcs_config(archive, sync=False, strict=True)[
        "synchronous_mode_strict"] is False  # strict means nothing without sync
    member = conf.member_config(
        name="node1", datadir=tmp_path / "n1", bindir=tmp_path, pg_port=5, rest_port=6,
        etcd_hosts=["127.0.0.1:7"], passwords={"postgres": "a", "cardmint_replicator": "b"},
        rest_password="c", pgpass=tmp_path / "pgpass", log_dir=tmp_path, archive=archive,
        sync=True, strict=True)
    addresses = [member["restapi"]["listen"], member["restapi"]["connect_address"],
                 member["postgresql"]["listen"], member["postgresql"]["connect_address"],
                 *member["etcd3"]["hosts"]]
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert member["postgresql"]["pg_hba"][0].split()[-1] == "scram-sha-256"
    assert json.loads(conf.render(member)) == member


def test_the_replication_role_patroni_made_is_altered_not_created() -> None:
    from cardmint.cluster.patroni import conf
    from cardmint.cluster.pg import roles

    sql = conf.bootstrap_sql(roles.cluster_sql(roles.new_passwords(), "cardmint"))
    assert not any(s.startswith("CREATE ROLE cardmint_replicator") for s in sql)
    altered = [s for s in sql if s.startswith("ALTER ROLE cardmint_replicator ")]
    assert len(altered) == 1 and "PASSWORD 'SCRAM-SHA-256$" in altered[0]
    assert sum(s.startswith("CREATE ROLE") for s in sql) == 4  # owner, app, ro, monitor
