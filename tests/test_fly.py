"""The Fly engine against a stand-in flyctl (tests/fly_standin/flyctl): each operation's
result and exactly what it sent, secrets never on argv or in the record, failures as clean
ClusterErrors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cardmint.cluster.engine import LogQuery
from cardmint.cluster.fly.engine import FlyCluster, RunResult
from cardmint.cluster.pg import roles
from cardmint.config import Settings
from cardmint.errors import ClusterError, UsageError
from cardmint.ops.drills import fly as fly_drills
from cardmint.ops.drills.frame import CONTRACT
from cardmint.ops.security.fly import rotate_fly
from support import TestCluster

STANDIN = Path(__file__).parent / "fly_standin" / "flyctl"
APP = "cardmint-db"
SECRET = "postgres://app:s3cr3t-Pa55@cardmint-db.flycast:5432/cardmint"


def world() -> dict[str, Any]:
    return {"apps": {
        APP: {"status": "deployed", "hostname": "cardmint-db.fly.dev", "secrets": [],
              "logs": ["2026-11-29T10:00:00Z app[m1] ord [info] checkpoint complete",
                       "2026-11-29T10:00:01Z app[m1] ord [info] ERROR: disk full "
                       "postgres://postgres:leaked@x:5432/db"],
              "machines": [
                  {"id": "m1", "name": "db-1", "state": "started", "role": "primary",
                   "region": "ord", "private_ip": "fdaa::1"},
                  {"id": "m2", "name": "db-2", "state": "started", "role": "replica",
                   "region": "ord", "private_ip": "fdaa::2"}],
              "volumes": [
                  {"id": "vol_a", "name": "pg_data", "size_gb": 10, "region": "ord",
                   "attached_machine_id": "m1"},
                  {"id": "vol_b", "name": "pg_data", "size_gb": 10, "region": "ord",
                   "attached_machine_id": "m2"}]},
        "web": {"status": "deployed", "machines": [], "volumes": [], "secrets": []}}}


class Fly:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state.json"
        self.record = tmp / "record.jsonl"
        self.state.write_text(json.dumps(world()))
        self.cluster = FlyCluster(APP, flyctl=str(STANDIN), env={
            "FLYCTL_STATE": str(self.state), "FLYCTL_RECORD": str(self.record)})

    def sent(self) -> list[list[str]]:
        return [r["argv"] for r in self.records()]

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def world(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def fail(self, prefix: str, message: str) -> None:
        w = self.world()
        w["fail"] = {prefix: message}
        self.state.write_text(json.dumps(w))


@pytest.fixture
def fly(tmp_path: Path) -> Fly:
    return Fly(tmp_path)


async def test_status_maps_machines_to_the_contract(fly: Fly) -> None:
    status = (await fly.cluster.status()).to_dict()
    assert fly.sent() == [["status", "-a", APP, "--json"],
                          ["machine", "list", "-a", APP, "--json"]]
    assert status["provider"] == "fly" and status["status"] == "deployed"
    assert status["hostname"] == "cardmint-db.fly.dev"
    keys = {"name", "role", "host", "port", "running", "timeline", "lsn", "lag_bytes", "lag_s"}
    for node in status["nodes"]:
        assert keys <= node.keys()
    assert [(n["name"], n["role"], n["host"], n["port"], n["running"])
            for n in status["nodes"]] == [("m1", "primary", "fdaa::1", 5432, True),
                                          ("m2", "replica", "fdaa::2", 5432, True)]


async def test_failover_swaps_roles_and_reports_both(fly: Fly) -> None:
    report = await fly.cluster.failover()
    assert (report.kind, report.old_primary, report.new_primary) == ("failover", "m1", "m2")
    assert report.fenced is False and report.old_primary_was_running is True
    assert set(report.timings_s) == {"list", "flyctl", "confirm"}
    assert fly.sent() == [["machine", "list", "-a", APP, "--json"],
                          ["postgres", "failover", "-a", APP],
                          ["machine", "list", "-a", APP, "--json"]]
    roles = {m["id"]: m["role"] for m in fly.world()["apps"][APP]["machines"]}
    assert roles == {"m1": "replica", "m2": "primary"}


async def test_failover_without_a_replica_is_a_cluster_error(fly: Fly) -> None:
    await fly.cluster.kill_machine("m2")
    with pytest.raises(ClusterError, match="no eligible replica"):
        await fly.cluster.failover()


async def test_kill_machine_stops_it(fly: Fly) -> None:
    assert await fly.cluster.kill_machine("m1") == {"machine": "m1", "killed": True}
    assert fly.sent() == [["machine", "kill", "m1", "-a", APP]]
    status = (await fly.cluster.status()).to_dict()
    assert [n["running"] for n in status["nodes"]] == [False, True]


async def test_resize(fly: Fly) -> None:
    out = await fly.cluster.resize_machine("m1", "performance-2x")
    assert out == {"machine": "m1", "vm_size": "performance-2x"}
    assert fly.sent() == [["machine", "update", "m1", "--vm-size", "performance-2x",
                           "-a", APP, "--yes"]]
    assert fly.world()["apps"][APP]["machines"][0]["vm_size"] == "performance-2x"


async def test_volumes_and_extend(fly: Fly) -> None:
    vols = await fly.cluster.volumes()
    assert [(v["id"], v["size_gb"]) for v in vols] == [("vol_a", 10), ("vol_b", 10)]
    out = await fly.cluster.extend_volume("vol_a", 50)
    assert out["id"] == "vol_a" and out["size_gb"] == 50
    assert fly.sent() == [["volumes", "list", "-a", APP, "--json"],
                          ["volumes", "extend", "vol_a", "--size", "50", "-a", APP,
                           "--yes", "--json"]]
    with pytest.raises(ClusterError, match="can only be increased"):
        await fly.cluster.extend_volume("vol_a", 20)
    with pytest.raises(UsageError):
        await fly.cluster.extend_volume("vol_a", 0)
    assert len(fly.sent()) == 3  # the usage error never reached flyctl


async def test_snapshots_and_restore(fly: Fly) -> None:
    snap = await fly.cluster.snapshot_create("vol_a")
    assert snap["id"] == "vs_vol_a_1"
    assert [s["id"] for s in await fly.cluster.snapshots("vol_a")] == ["vs_vol_a_1"]
    out = await fly.cluster.restore_from_snapshot("cardmint-db-restore", snap["id"],
                                                  region="ord")
    assert out == {"app": "cardmint-db-restore", "snapshot": "vs_vol_a_1"}
    assert fly.sent() == [
        ["volumes", "snapshots", "create", "vol_a", "-a", APP, "--json"],
        ["volumes", "snapshots", "list", "vol_a", "--json"],
        ["postgres", "create", "--name", "cardmint-db-restore", "--snapshot-id", "vs_vol_a_1",
         "--region", "ord"]]
    restored = fly.world()["apps"]["cardmint-db-restore"]
    assert restored["volumes"][0]["snapshot_id"] == "vs_vol_a_1"


async def test_set_secret_goes_on_stdin_never_argv(fly: Fly) -> None:
    out = await fly.cluster.set_secret("web", "DATABASE_URL", SECRET)
    assert out == {"app": "web", "key": "DATABASE_URL", "set": True}
    records = fly.records()
    assert [r["argv"] for r in records] == [["secrets", "import", "-a", "web"]]
    digest = hashlib.sha256(SECRET.encode()).hexdigest()[:12]
    assert records[0]["stdin"] == f"DATABASE_URL=sha256:{digest}"
    assert "s3cr3t" not in fly.record.read_text()
    assert fly.world()["apps"]["web"]["secrets"] == ["DATABASE_URL"]
    with pytest.raises(UsageError) as err:
        await fly.cluster.set_secret("web", "BAD KEY", SECRET)
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(UsageError) as err:
        await fly.cluster.set_secret("web", "K", "line1\nline2-s3cr3t")
    assert "s3cr3t" not in str(err.value)


async def test_secret_never_in_an_error(fly: Fly) -> None:
    fly.fail("secrets import", f"Error: could not parse DATABASE_URL={SECRET} (x)")
    with pytest.raises(ClusterError) as err:
        await fly.cluster.set_secret("web", "DATABASE_URL", SECRET)
    text = str(err.value)
    assert "s3cr3t" not in text and "secrets import -a web failed (exit 1)" in text
    assert err.value.__cause__ is None and err.value.__context__ is None


async def test_a_failing_flyctl_is_a_clean_cluster_error(fly: Fly) -> None:
    fly.fail("machine kill", "Error: failed to kill machine m1: "
             "postgres://postgres:hunter2@m1:5432 unreachable")
    with pytest.raises(ClusterError) as err:
        await fly.cluster.kill_machine("m1")
    text = str(err.value)
    assert text.startswith("flyctl machine kill m1 -a cardmint-db failed (exit 1): Error:")
    assert "hunter2" not in text and "postgres:***@m1" in text
    with pytest.raises(ClusterError, match="Could not find App"):
        await FlyCluster("nope", flyctl=fly.cluster.flyctl, env={
            "FLYCTL_STATE": str(fly.state), "FLYCTL_RECORD": str(fly.record)}).volumes()


async def test_logs_errors_only_and_redacted(fly: Fly) -> None:
    lines = (await fly.cluster.logs(LogQuery(errors=True))).lines
    assert lines is not None and len(lines) == 1 and "ERROR: disk full" in lines[0]
    assert "leaked" not in lines[0] and "postgres:***@x" in lines[0]
    assert len((await fly.cluster.logs(LogQuery())).lines or []) == 2
    assert fly.sent() == [["logs", "-a", APP, "--no-tail"]] * 2


def test_connect_argv(fly: Fly) -> None:
    assert fly.cluster.connect_argv() == [str(STANDIN), "postgres", "connect", "-a", APP]
    assert fly.sent() == []


async def test_runner_timeout_missing_binary_and_bad_json() -> None:
    def slow(argv, *, input, timeout, env):
        raise subprocess.TimeoutExpired(argv, timeout)

    with pytest.raises(ClusterError, match="timed out after 3 s"):
        await FlyCluster(APP, runner=slow, timeout_s=3).volumes()
    with pytest.raises(ClusterError, match="flyctl not found"):
        await FlyCluster(APP, flyctl="/nonexistent/flyctl").volumes()

    def not_json(argv, *, input, timeout, env):
        return RunResult(0, "Update available! 0.3.1 -> 0.3.2", "")

    with pytest.raises(ClusterError, match="did not answer JSON"):
        await FlyCluster(APP, runner=not_json).volumes()


async def test_identifiers_are_checked(fly: Fly) -> None:
    with pytest.raises(UsageError):
        FlyCluster("-a evil")
    with pytest.raises(UsageError):
        await fly.cluster.kill_machine("m1 --all")
    with pytest.raises(UsageError):
        await fly.cluster.resize_machine("m1", "--help")
    assert fly.sent() == []


async def test_failover_takes_no_target(fly: Fly) -> None:
    with pytest.raises(UsageError, match="--to"):
        await fly.cluster.failover("m2")
    assert fly.sent() == []


async def test_switchover_then_rejoin_a_killed_machine(fly: Fly) -> None:
    report = await fly.cluster.switchover()
    assert (report.kind, report.new_primary) == ("switchover", "m2")
    await fly.cluster.kill_machine("m1")
    rejoin = await fly.cluster.rejoin("m1")
    assert (rejoin.node, rejoin.primary, rejoin.method) == ("m1", "m2", "machine start")
    assert ["machine", "start", "m1", "-a", APP] in fly.sent()
    roles = {m["id"]: (m["role"], m["state"]) for m in fly.world()["apps"][APP]["machines"]}
    assert roles == {"m1": ("replica", "started"), "m2": ("primary", "started")}


async def test_resize_all_does_replicas_first_then_a_switchover(fly: Fly) -> None:
    out = (await fly.cluster.resize(vm_size="performance-2x")).to_dict()
    updates = [a[2] for a in fly.sent() if a[:2] == ["machine", "update"]]
    assert updates == ["m2", "m1"]  # the replica, then the old primary after the switchover
    sent = [" ".join(a[:2]) for a in fly.sent()]
    assert sent.index("postgres failover") < len(sent) - 1 - sent[::-1].index("machine update")
    assert (out["primary_before"], out["primary_after"]) == ("m1", "m2")
    sizes = {m["id"]: m["vm_size"] for m in fly.world()["apps"][APP]["machines"]}
    assert sizes == {"m1": "performance-2x", "m2": "performance-2x"}


async def test_up_and_down_say_fly_does_that(fly: Fly) -> None:
    with pytest.raises(UsageError, match="flyctl postgres create"):
        await fly.cluster.up()
    with pytest.raises(UsageError, match="flyctl apps destroy"):
        await fly.cluster.down()
    assert fly.sent() == []


# -- the same `cardmint cluster` commands, with CARDMINT_PROVIDER=fly ----------------------


def fly_cli(fly: Fly, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env |= {"CARDMINT_PROVIDER": "fly", "CARDMINT_FLY_APP": APP, "CARDMINT_HOME": str(tmp),
            "CARDMINT_FLYCTL": str(STANDIN), "FLYCTL_STATE": str(fly.state),
            "FLYCTL_RECORD": str(fly.record), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_cli_drives_fly(fly: Fly, tmp_path: Path) -> None:
    done = fly_cli(fly, tmp_path, "cluster", "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["provider"] == "fly"
    assert [(n["name"], n["role"]) for n in status["nodes"]] == [("m1", "primary"),
                                                                  ("m2", "replica")]
    done = fly_cli(fly, tmp_path, "cluster", "switchover", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["new_primary"] == "m2"
    done = fly_cli(fly, tmp_path, "cluster", "resize", "--vm-size", "performance-2x",
                   "--force", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["primary_after"] == "m1"  # switched back during the resize
    people = fly_cli(fly, tmp_path, "cluster", "status")
    assert people.returncode == 0 and "m1" in people.stdout and "fly" in people.stdout
    done = fly_cli(fly, tmp_path, "cluster", "logs", "--errors", "--json")
    assert done.returncode == 0, done.stderr
    lines = json.loads(done.stdout)["lines"]
    assert len(lines) == 1 and "disk full" in lines[0] and "leaked" not in lines[0]


def test_cli_refuses_what_fly_does_itself(fly: Fly, tmp_path: Path) -> None:
    for args, words in ((("cluster", "up"), "flyctl postgres create"),
                        (("cluster", "down"), "flyctl apps destroy"),
                        (("cluster", "failover", "--to", "m2"), "--to"),
                        (("cluster", "add-replica"), "local engine"),
                        (("cluster", "resize", "--memory", "4GB", "--force"), "--vm-size"),
                        (("security", "rotate", "--force"), "CARDMINT_ADMIN_URL")):
        done = fly_cli(fly, tmp_path, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert words in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert fly.sent() == []


# -- `security rotate` on Fly: a real PostgreSQL stands in for the Fly database -----------


@pytest.fixture
async def fly_role(pg: TestCluster) -> AsyncIterator[tuple[str, str]]:
    """A login role of its own (the shared cluster's roles stay as they are)."""
    role, password = f"flyapp_{os.getpid()}", "old-Pa55-word"
    admin = await pg.admin()
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD "
                            f"{roles.literal(roles.scram_verifier(password))}")
        await admin.execute(f"GRANT CONNECT ON DATABASE cardmint TO {role}")
        yield role, password
    finally:
        await admin.execute(f"REVOKE CONNECT ON DATABASE cardmint FROM {role}")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def fly_settings(pg: TestCluster, role: str, password: str) -> Settings:
    primary = pg.cluster.state().primary
    host = f"{primary.host}:{primary.port}"
    return pg.settings(
        provider="fly", fly_app=APP, fly_consumer_app="web",
        admin_url=f"postgresql://postgres:{pg.password('postgres')}@{host}/cardmint",
        database_url=f"postgresql://{role}:{password}@{host}/cardmint")


async def test_rotate_on_fly_sets_the_apps_database_url_by_stdin(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    role, old = fly_role
    report = await rotate_fly(fly_settings(pg, role, old), [role], force=True, show=True,
                              fly=fly.cluster)
    assert report.ok, report.to_dict()
    new = report.rotations[0].password
    assert new and new != old and "DATABASE_URL set on web" in report.rotations[0].detail
    url = f"postgres://{role}:{new}@{APP}.flycast:5432/cardmint"
    imports = [r for r in fly.records() if r["argv"][:2] == ["secrets", "import"]]
    assert [r["argv"] for r in imports] == [["secrets", "import", "-a", "web"]]
    digest = "sha256:" + hashlib.sha256(url.encode()).hexdigest()[:12]
    assert imports[0]["stdin"].strip() == f"DATABASE_URL={digest}"
    assert new not in fly.record.read_text()
    primary = pg.cluster.state().primary
    conn = await asyncpg.connect(host=primary.host, port=primary.port, user=role,
                                 password=new, database="cardmint")
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(host=primary.host, port=primary.port, user=role, password=old,
                              database="cardmint")


async def test_rotate_on_fly_puts_the_old_password_back_when_the_login_fails(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    role, old = fly_role
    admin = await pg.admin()
    try:
        await admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")  # every new login fails
        before = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                      role)
        report = await rotate_fly(fly_settings(pg, role, old), [role], force=True,
                                  fly=fly.cluster)
        assert not report.ok and "old password restored" in report.rotations[0].detail
        assert await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                    role) == before
    finally:
        await admin.close()
    assert fly.sent() == []  # the application was never told


async def test_rotate_on_fly_refuses_to_lock_out_the_operator(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    with pytest.raises(UsageError, match="lock"):
        await rotate_fly(fly_settings(pg, *fly_role), ["postgres"], force=True, fly=fly.cluster)
    with pytest.raises(UsageError, match="--role"):
        await rotate_fly(fly_settings(pg, *fly_role), None, force=True, fly=fly.cluster)


def test_cli_storage_and_backups_are_volumes_and_snapshots_on_fly(fly: Fly,
                                                                   tmp_path: Path) -> None:
    done = fly_cli(fly, tmp_path, "storage", "--json")
    assert done.returncode == 0, done.stderr
    vols = json.loads(done.stdout)["volumes"]
    assert [(v["id"], v["size_gb"], v["role"]) for v in vols] == [("vol_a", 10, "primary"),
                                                                  ("vol_b", 10, "replica")]
    done = fly_cli(fly, tmp_path, "storage", "extend", "vol_a", "--size-gb", "10")
    assert done.returncode == 3 and "only grow" in done.stdout + done.stderr
    done = fly_cli(fly, tmp_path, "storage", "extend", "vol_a", "--size-gb", "50", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size_gb"] == 50
    done = fly_cli(fly, tmp_path, "backup", "create", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert (made["volume"], made["machine"]) == ("vol_a", "m1")  # the primary's volume
    done = fly_cli(fly, tmp_path, "backup", "list", "--json")
    snaps = json.loads(done.stdout)["snapshots"]
    assert [s["id"] for s in snaps] == [made["snapshot"]["id"]]
    done = fly_cli(fly, tmp_path, "backup", "restore", "vs_nope", "--to-app", "cardmint-db-r")
    assert done.returncode == 3 and "no snapshot vs_nope" in done.stdout + done.stderr
    done = fly_cli(fly, tmp_path, "backup", "restore", made["snapshot"]["id"],
                   "--to-app", "cardmint-db-restore", "--json")
    assert done.returncode == 0, done.stderr
    assert "generated-pw" not in done.stdout + done.stderr  # flyctl's DSN is never shown
    assert "cardmint-db-restore" in fly.world()["apps"]
    assert ["volumes", "extend", "vol_a", "--size", "50", "-a", APP, "--yes",
            "--json"] in fly.sent()


# -- the failover drill on Fly: flyctl's side from the stand-in, the probe on real PG ------


async def test_drill_on_fly_kills_the_primary_machine_and_restarts_it(
        fly: Fly, pg: TestCluster, catalog: Any) -> None:
    w = fly.world()
    w["auto_failover"] = True
    fly.state.write_text(json.dumps(w))
    settings = pg.settings(provider="fly", fly_app=APP)
    report = await fly_drills.drill(settings, fly=fly.cluster)
    assert report["error"] is None, report["error"]
    assert set(CONTRACT) <= report.keys() and report["provider"] == "fly"
    assert (report["old_primary"], report["new_primary"]) == ("m1", "m2")
    assert report["ok"] and report["rejoined"] and report["lost_writes"] == 0
    assert report["acknowledged_writes"] > 0 and report["in_recovery_after"] is False
    sent = [a[:3] for a in fly.sent()]
    assert sent.count(["machine", "kill", "m1"]) == 1
    assert sent.index(["machine", "kill", "m1"]) < sent.index(["machine", "start", "m1"])
    roles = {m["id"]: (m["role"], m["state"]) for m in fly.world()["apps"][APP]["machines"]}
    assert roles == {"m1": ("replica", "started"), "m2": ("primary", "started")}
    assert await asyncio.to_thread(os.path.exists, report["markdown"])
    assert report["id"] is not None


async def test_drill_on_fly_refuses_without_a_running_replica(fly: Fly, pg: TestCluster) -> None:
    await fly.cluster.kill_machine("m2")
    with pytest.raises(ClusterError, match="no running replica"):
        await fly_drills.drill(pg.settings(provider="fly", fly_app=APP), fly=fly.cluster)
    assert ["machine", "kill", "m1", "-a", APP] not in fly.sent()
