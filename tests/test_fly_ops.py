"""The runbook's procedures on Fly (backups, storage, rotation, the drill) against the
stand-in flyctl, with the session's real PostgreSQL as the database behind "Fly": the
rotation logs in with the passwords it sets, the drill's probe writes through the
application's DSN, and a restored app is reached through the stand-in's `flyctl proxy`,
which relays to that PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cardmint import secretfile
from cardmint.cluster.fly.waits import Waits
from cardmint.cluster.pg import roles
from cardmint.config import Settings, secret
from cardmint.errors import ClusterError, UsageError
from cardmint.ops.backups import fly as fly_backups
from cardmint.ops.drills import fly as fly_drills
from cardmint.ops.drills.frame import CONTRACT
from cardmint.ops.security.fly import rotate_fly
from fly_world import APP, FAST, Fly, hashed
from support import TestCluster


@pytest.fixture
def fly(tmp_path: Path) -> Fly:
    return Fly(tmp_path)


# -- backups and storage: snapshots and volumes ---------------------------------------------


def test_cli_storage_and_backup_create_list_on_fly(fly: Fly, tmp_path: Path) -> None:
    done = fly.cli(tmp_path, "storage", "--json")
    assert done.returncode == 0, done.stderr
    vols = json.loads(done.stdout)["volumes"]
    assert [(v["id"], v["size_gb"], v["role"]) for v in vols] == [
        ("vol_1", 10, "primary"), ("vol_2", 10, "replica"), ("vol_3", 10, "replica")]
    done = fly.cli(tmp_path, "storage", "extend", "vol_1", "--size-gb", "10")
    assert done.returncode == 3 and "only grow" in done.stdout + done.stderr
    w = fly.world()
    w["apps"][APP]["volumes"][0]["needs_restart"] = True
    fly.state.write_text(json.dumps(w))
    done = fly.cli(tmp_path, "storage", "extend", "vol_1", "--size-gb", "50", "--json")
    assert done.returncode == 0, done.stderr
    grown = json.loads(done.stdout)
    assert (grown["size_gb"], grown["needs_restart"]) == (50, True)
    assert "stopped and started" in grown["detail"]
    # `volumes snapshots create` prints a line, not JSON, and learns no id
    done = fly.cli(tmp_path, "backup", "create", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert (made["volume"], made["machine"]) == ("vol_1", "m1")  # the primary's volume
    assert made["snapshot"]["status"] == "created" and made["snapshot"]["id"]
    assert ["volumes", "snapshots", "create", "vol_1", "-a", APP] in fly.sent()
    done = fly.cli(tmp_path, "backup", "list", "--json")
    assert [s["id"] for s in json.loads(done.stdout)["snapshots"]] == [made["snapshot"]["id"]]


# -- backup restore: a new app from a snapshot, its password kept, verified ----------------


async def snapshot_of_primary(fly: Fly) -> str:
    made = await fly_backups.snapshot(fly.cluster)
    return str(made["snapshot"]["id"])


def restore_world(fly: Fly, pg: TestCluster) -> None:
    """The restored app's Postgres is the session's cluster, whose superuser password
    is what "Fly" generates (flex sets the restored role's password to it)."""
    primary = pg.cluster.state().primary
    fly.change(restore_backend=f"{primary.host}:{primary.port}",
               operator_password=pg.password("postgres"))


def test_cli_restore_creates_the_app_keeps_its_password_and_verifies_it(
        fly: Fly, pg: TestCluster, catalog: Any, tmp_path: Path) -> None:
    restore_world(fly, pg)
    snap_id = "vs_1"  # taken earlier: `backup list` shows it
    fly.change(snapshots={"vol_1": [{"id": snap_id, "status": "created", "size": 2**20,
                                     "volume_size": 10, "created_at": "2026-11-29T10:00:00Z"}]})
    base = pg.settings()
    env = {"CARDMINT_DATABASE_URL": secret(base.database_url) or "",
           "CARDMINT_MIGRATION_URL": secret(base.migration_url) or ""}
    done = fly.cli(tmp_path, "backup", "restore", snap_id, "--to-app", "cardmint-db-r",
                   "--json", **env)
    password = pg.password("postgres")
    assert password not in done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["app"] == "cardmint-db-r", report["verification"]
    assert {c["name"] for c in report["verification"]["checks"]} >= {
        "promoted", "schema", "health", "test_card"}
    create = next(a for a in fly.sent() if a[:2] == ["postgres", "create"])
    flags = dict(zip(create[2::2], create[3::2], strict=False))
    assert flags == {"--name": "cardmint-db-r", "--snapshot-id": snap_id, "--org": "cardmint",
                     "--region": "ord", "--initial-cluster-size": "3",
                     "--vm-cpu-kind": "shared", "--vm-cpus": "2", "--vm-memory": "4096",
                     "--volume-size": "10"}
    assert ["proxy", "0:5432", "-a", "cardmint-db-r", "--watch-stdin"] in fly.sent()
    kept = secretfile.read(tmp_path / "secrets.env")
    assert kept[fly_backups.password_key("cardmint-db-r")] == password
    assert oct((tmp_path / "secrets.env").stat().st_mode & 0o777) == "0o600"
    assert len(fly.app()["machines"]) == 3  # the source app is untouched
    again = fly.cli(tmp_path, "backup", "restore", snap_id, "--to-app", "cardmint-db-r")
    assert again.returncode == 3 and "exists already" in again.stdout + again.stderr


def test_flyctl_asks_and_fails_without_every_answer(fly: Fly) -> None:
    """What `postgres create --snapshot-id` does without a terminal when a flag is
    missing (create.go, prompt.go): the command CardMint used to send."""
    fly.change(snapshots={"vol_1": [{"id": "vs_1", "status": "created", "size": 1,
                                     "volume_size": 10, "created_at": "2026-11-29T10:00:00Z"}]})
    ran = fly.flyctl("postgres", "create", "--name", "r", "--snapshot-id", "vs_1")
    assert ran.returncode == 1
    assert "org slug must be specified when not running interactively" in ran.stderr
    ran = fly.flyctl("postgres", "create", "--name", "r", "--snapshot-id", "vs_1", "--org",
                     "cardmint", "--region", "ord", "--vm-size", "shared-cpu-2x")
    assert ran.returncode == 1 and "prompt: non interactive" in ran.stderr
    assert "r" not in fly.world()["apps"]


async def test_a_restore_cut_off_says_how_to_remove_the_half_built_app(
        fly: Fly, pg: TestCluster, tmp_path: Path) -> None:
    restore_world(fly, pg)
    snap_id = await snapshot_of_primary(fly)
    fly.change(timing={**fly.world()["timing"], "restore_s": 5})
    short = Waits(**{**FAST.__dict__, "restore_first_s": 1, "restore_other_s": 0,
                     "health_s": 0, "slack_s": 0})
    settings = pg.settings(provider="fly", fly_app=APP).model_copy(update={"home": tmp_path})
    with pytest.raises(ClusterError) as err:
        await fly_backups.restore(settings, fly.engine(short), snap_id, "cardmint-db-r")
    text = str(err.value)
    assert "cut off after 1 s" in text
    assert "flyctl apps destroy cardmint-db-r --yes" in text
    assert "cardmint-db-r" in fly.world()["apps"]  # created first: the name is taken
    with pytest.raises(UsageError, match="exists already"):
        await fly_backups.restore(settings, fly.cluster, snap_id, "cardmint-db-r")
    assert not (tmp_path / "secrets.env").exists()


# -- `security rotate` on Fly -----------------------------------------------------------------


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


async def logs_in(pg: TestCluster, role: str, password: str) -> bool:
    primary = pg.cluster.state().primary
    try:
        conn = await asyncpg.connect(host=primary.host, port=primary.port, user=role,
                                     password=password, database="cardmint")
    except asyncpg.InvalidPasswordError:
        return False
    await conn.close()
    return True


async def verifier(pg: TestCluster, role: str) -> str:
    admin = await pg.admin()
    try:
        return str(await admin.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role))
    finally:
        await admin.close()


async def test_rotate_stages_then_deploys_then_the_old_password_is_refused(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    role, old = fly_role
    report = await rotate_fly(fly_settings(pg, role, old), [role], force=True, show=True,
                              fly=fly.cluster)
    assert report.ok, report.to_dict()
    rotation = report.rotations[0]
    new = rotation.password
    assert new and new != old
    detail = rotation.detail
    steps = ["verified", "DATABASE_URL staged on web", "2 machine(s) of web restarted",
             "old password refused"]
    assert [detail.index(s) for s in steps] == sorted(detail.index(s) for s in steps)
    url = f"postgres://{role}:{new}@{APP}.flycast:5432/cardmint"
    secret_calls = [r for r in fly.records() if r["argv"][0] == "secrets"]
    assert [r["argv"] for r in secret_calls] == [["secrets", "import", "--stage", "-a", "web"],
                                                 ["secrets", "deploy", "-a", "web"]]
    assert secret_calls[0]["stdin"] == f"DATABASE_URL={hashed(url)}"
    assert new not in fly.record.read_text()
    assert [m["secrets"] for m in fly.app("web")["machines"]] == [
        {"DATABASE_URL": hashed(url)}] * 2  # every machine runs with the new URL
    assert await logs_in(pg, role, new) and not await logs_in(pg, role, old)


async def test_rotate_puts_the_old_password_back_when_the_login_fails(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    role, old = fly_role
    before = await verifier(pg, role)
    admin = await pg.admin()
    try:
        await admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")  # every new login fails
        report = await rotate_fly(fly_settings(pg, role, old), [role], force=True,
                                  fly=fly.cluster)
    finally:
        await admin.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        await admin.close()
    assert not report.ok and "old password restored" in report.rotations[0].detail
    assert await verifier(pg, role) == before
    assert fly.sent() == []  # the application was never told


async def test_rotate_puts_the_old_password_back_when_staging_fails(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    role, old = fly_role
    fly.fail("secrets import", "update secrets: 503 Service Unavailable")
    report = await rotate_fly(fly_settings(pg, role, old), [role], force=True,
                              fly=fly.cluster)
    assert not report.ok
    assert "staging DATABASE_URL on web failed, old password restored" in \
        report.rotations[0].detail
    assert await logs_in(pg, role, old)
    assert "secrets deploy" not in fly.commands()


async def test_rotate_cut_off_in_the_deploy_says_how_to_finish(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    role, old = fly_role
    fly.change(timing={**fly.world()["timing"], "deploy_s": 3})
    short = fly.engine(Waits(**{**FAST.__dict__, "deploy_wait_s": 0.5, "slack_s": 0}))
    report = await rotate_fly(fly_settings(pg, role, old), [role], force=True, show=True,
                              fly=short)
    assert not report.ok
    detail = report.rotations[0].detail
    assert "the database has the new password but the deploy did not finish" in detail
    assert "flyctl secrets deploy -a web" in detail
    assert await logs_in(pg, role, report.rotations[0].password or "")


async def test_rotate_refuses_to_lock_out_the_operator(
        fly: Fly, pg: TestCluster, fly_role: tuple[str, str]) -> None:
    with pytest.raises(UsageError, match="lock"):
        await rotate_fly(fly_settings(pg, *fly_role), ["postgres"], force=True, fly=fly.cluster)
    with pytest.raises(UsageError, match="--role"):
        await rotate_fly(fly_settings(pg, *fly_role), None, force=True, fly=fly.cluster)


# -- the failover drill: flyctl's side from the stand-in, the probe on real PostgreSQL ------


async def test_drill_stops_the_primary_so_it_stays_down_and_repmgr_promotes(
        fly: Fly, pg: TestCluster, catalog: Any) -> None:
    settings = pg.settings(provider="fly", fly_app=APP)
    report = await fly_drills.drill(settings, fly=fly.cluster)
    assert report["error"] is None, report["error"]
    assert set(CONTRACT) <= report.keys() and report["provider"] == "fly"
    assert (report["old_primary"], report["new_primary"]) == ("m1", "m2")
    assert report["ok"] and report["rejoined"] and report["lost_writes"] == 0
    assert report["acknowledged_writes"] > 0 and report["in_recovery_after"] is False
    # repmgr's own wait (the stand-in's repmgr_s: 0.6 s) lies between the stop and the
    # new primary
    assert report["detection_s"] + report["promotion_s"] >= 0.6
    assert ["machine", "stop", "m1", "--signal", "SIGKILL", "-a", APP] in fly.sent()
    assert "machine kill" not in fly.commands()
    sent = fly.commands()
    assert sent.index("machine stop") < sent.index("machine start")
    assert {m["id"]: (m["role"], m["state"]) for m in fly.app()["machines"]} == {
        "m1": ("replica", "started"), "m2": ("primary", "started"),
        "m3": ("replica", "started")}
    assert report["id"] is not None


async def test_drill_refuses_two_machines_a_split_brain_and_no_replica(
        tmp_path: Path, pg: TestCluster) -> None:
    settings = pg.settings(provider="fly", fly_app=APP)
    (tmp_path / "two").mkdir()
    two = Fly(tmp_path / "two", machines=2)
    with pytest.raises(UsageError, match="at least 3 machines"):
        await fly_drills.drill(settings, fly=two.cluster)
    brain = Fly(tmp_path)
    brain.set_machine("m3", role="primary")
    with pytest.raises(ClusterError, match="split brain"):
        await fly_drills.drill(settings, fly=brain.cluster)
    brain.set_machine("m3", role="replica")
    for machine in ("m2", "m3"):
        await brain.cluster.stop_machine(machine)
    with pytest.raises(ClusterError, match="no running replica"):
        await fly_drills.drill(settings, fly=brain.cluster)
    assert "machine stop m1" not in " ".join(" ".join(a) for a in brain.sent())
    assert two.commands() == ["machine list"]
