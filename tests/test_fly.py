"""The Fly engine against the stand-in flyctl (tests/fly_standin/, rebuilt from flyctl's
source): each operation's result and exactly what it sent; flyctl's own failure modes
(prompts without a terminal, restart policy `always`, the 3-machine rule, slow commands)
met with refusals that say why and bounds above flyctl's own waits; secrets never on argv
or in a message. The operations that need a database behind "Fly" are in
test_fly_ops.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cardmint.cluster.engine import LogQuery
from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.flyctl import RunResult, subprocess_runner
from cardmint.cluster.fly.waits import Waits
from cardmint.errors import ClusterError, UsageError
from fly_world import APP, FAST, STANDIN, Fly, hashed
from support import poll


@pytest.fixture
def fly(tmp_path: Path) -> Fly:
    return Fly(tmp_path)


# -- status and roles -------------------------------------------------------------------


async def test_status_maps_machines_to_the_contract(fly: Fly) -> None:
    status = (await fly.cluster.status()).to_dict()
    assert fly.sent() == [["status", "-a", APP, "--json"],
                          ["machine", "list", "-a", APP, "--json"]]
    keys = {"name", "role", "host", "port", "running", "timeline", "lsn", "lag_bytes", "lag_s"}
    assert all(keys <= node.keys() for node in status["nodes"])
    # 5433 is Postgres on each machine; 5432 is flex's HAProxy in front of the primary
    assert [(n["name"], n["role"], n["host"], n["port"], n["running"])
            for n in status["nodes"]] == [("m1", "primary", "fdaa::1", 5433, True),
                                          ("m2", "replica", "fdaa::2", 5433, True),
                                          ("m3", "replica", "fdaa::3", 5433, True)]
    assert status["provider"] == "fly" and status["status"] == "deployed"
    assert status["hostname"] == f"{APP}.fly.dev" and status["manager"] == "repmgr"
    assert status["warnings"] == []
    assert status["nodes"][0]["role_check"] == "passing: primary"


async def test_stolon_says_leader_and_a_failing_role_check_is_no_role(tmp_path: Path) -> None:
    fly = Fly(tmp_path, machines=2, manager="stolon")
    assert [(n.name, n.role) for n in (await fly.cluster.status()).nodes] == [
        ("m1", "primary"), ("m2", "replica")]
    fly.set_machine("m2", ready_at=time.time() + 60)  # checks critical while it boots
    nodes = (await fly.cluster.status()).nodes
    assert (nodes[1].role, nodes[1].extra["role_check"]) == ("unknown", "critical: -")
    fly.set_machine("m1", ready_at=time.time() + 60)
    status = await fly.cluster.status()
    assert "no running machine passes its role check as primary" in status.extra["warnings"]


async def test_two_machines_claiming_primary_are_seen_and_nothing_acts(fly: Fly,
                                                                     tmp_path: Path) -> None:
    fly.set_machine("m2", role="primary")
    status = await fly.cluster.status()
    assert any("m1, m2 all claim to be primary" in w for w in status.extra["warnings"])
    for act in (fly.cluster.failover, lambda: fly.cluster.resize(vm_size="performance-2x")):
        with pytest.raises(ClusterError, match="split brain"):
            await act()
    assert set(fly.commands()) == {"status", "machine list"}
    done = fly.cli(tmp_path, "cluster", "status")
    assert done.returncode == 2 and "split brain" in done.stdout, done.stdout + done.stderr


async def test_a_returning_primary_is_a_zombie_then_a_replica(fly: Fly) -> None:
    await fly.cluster.stop_machine("m1")
    await poll(lambda: _primary_is(fly, "m2"), timeout=10)
    fly.change(timing={**fly.world()["timing"], "boot_s": 2.0})
    seen = []

    async def watch() -> None:
        while True:
            for m in await fly.cluster.machines():
                role = m.check("role")
                if m.id == "m1" and role is not None and role.status == "passing":
                    seen.append(role.output)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    report = await fly.cluster.rejoin("m1")
    watcher.cancel()
    assert (report.node, report.primary, report.method) == ("m1", "m2", "machine start")
    assert "zombie" in seen  # not a primary: CardMint waited for "replica"
    assert ["machine", "start", "m1", "-a", APP] in fly.sent()


async def _primary_is(fly: Fly, machine: str) -> bool:
    status = await fly.cluster.status()
    return [n.name for n in status.nodes if n.role == "primary" and n.running] == [machine]


# -- failover and resize ------------------------------------------------------------------


async def test_failover_swaps_roles_and_reports_both(fly: Fly) -> None:
    report = await fly.cluster.failover()
    assert (report.kind, report.old_primary, report.new_primary) == ("failover", "m1", "m2")
    assert report.fenced is False and report.old_primary_was_running is True
    assert set(report.timings_s) == {"list", "flyctl", "confirm"}
    assert fly.sent() == [["machine", "list", "-a", APP, "--json"],
                          ["postgres", "failover", "-a", APP],
                          ["machine", "list", "-a", APP, "--json"]]
    assert {m["id"]: m["role"] for m in fly.app()["machines"]} == {
        "m1": "replica", "m2": "primary", "m3": "replica"}


async def test_failover_on_two_flex_machines_is_refused_before_flyctl(tmp_path: Path) -> None:
    fly = Fly(tmp_path, machines=2)
    ran = fly.flyctl("postgres", "failover", "-a", APP)  # what flyctl itself does
    assert ran.returncode == 1
    assert "Not enough machines to meet quorum requirements" in ran.stderr
    with pytest.raises(UsageError, match="at least 3 machines; this one has 2"):
        await fly.cluster.failover()
    assert fly.commands() == ["postgres failover", "machine list"]


async def test_failover_without_a_healthy_replica_is_refused(fly: Fly) -> None:
    for machine in ("m2", "m3"):
        fly.set_machine(machine, ready_at=time.time() + 60)
    with pytest.raises(ClusterError, match="no running replica whose health checks all pass"):
        await fly.cluster.failover()
    assert "postgres failover" not in fly.commands()


def recording_runner(timeouts: dict[str, float]) -> Any:
    def run(argv: list[str], *, input: str | None, timeout: float,
            env: dict[str, str] | None) -> RunResult:
        timeouts[" ".join(argv[1:3])] = timeout
        return subprocess_runner(argv, input=input, timeout=timeout, env=env)
    return run


async def test_bounds_are_above_flyctls_own_waits(fly: Fly) -> None:
    """failover.go: ~90 s of steps, then up to 300 s of health checks (watch.go); machine
    update: --wait-timeout 300 to settle, then the health checks."""
    timeouts: dict[str, float] = {}
    cluster = FlyCluster(APP, flyctl=str(STANDIN), env=fly.env,
                         runner=recording_runner(timeouts))
    await cluster.resize(vm_size="performance-2x")
    assert timeouts["postgres failover"] > 90 + 300
    assert timeouts["machine update"] > 300 + 300
    updates = [a for a in fly.sent() if a[:2] == ["machine", "update"]]
    assert all(a[a.index("--wait-timeout") + 1] == "300" for a in updates)
    assert Waits().restore_s(3) > 3600 + 2 * 300 + 300  # flypg/launcher.go


async def test_a_failover_cut_off_says_what_to_look_at(fly: Fly) -> None:
    fly.change(timing={**fly.world()["timing"], "failover_s": 5})
    cluster = fly.engine(Waits(**{**FAST.__dict__, "failover_steps_s": 0, "health_s": 0,
                                  "slack_s": 1}))
    with pytest.raises(ClusterError) as err:
        await cluster.failover()
    text = str(err.value)
    assert "cut off after 1 s" in text and f"flyctl machine start m1 -a {APP}" in text


async def test_resize_does_replicas_first_then_a_switchover(fly: Fly) -> None:
    out = (await fly.cluster.resize(vm_size="performance-2x")).to_dict()
    updates = [a[2] for a in fly.sent() if a[:2] == ["machine", "update"]]
    assert updates == ["m2", "m3", "m1"]  # the old primary after the switchover
    commands = fly.commands()
    assert commands.index("postgres failover") < len(commands) - 1 - commands[::-1].index(
        "machine update")
    assert (out["primary_before"], out["primary_after"]) == ("m1", "m2")
    sizes = {m["id"]: m["guest"] for m in fly.app()["machines"]}
    assert all(g == {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}
               for g in sizes.values())


async def test_resize_on_two_flex_machines_changes_nothing(tmp_path: Path) -> None:
    fly = Fly(tmp_path, machines=2)
    with pytest.raises(UsageError, match="at least 3 machines"):
        await fly.cluster.resize(vm_size="performance-2x")
    assert fly.commands() == ["machine list"]  # no replica resized before a failed failover


# -- the drill's premise ------------------------------------------------------------------


async def test_machine_kill_is_undone_by_flyd_and_stop_is_not(fly: Fly) -> None:
    """Restart policy `always` (flypg/launcher.go): a killed primary machine comes back
    before repmgr (~60 s) gives up on it; a stopped one stays stopped."""
    assert fly.flyctl("machine", "kill", "m1", "-a", APP).returncode == 0
    await poll(lambda: _primary_is(fly, "m1"), timeout=10)
    assert all(m.running for m in await fly.cluster.machines())
    await fly.cluster.stop_machine("m1")
    assert fly.sent()[-1] == ["machine", "stop", "m1", "--signal", "SIGKILL", "-a", APP]
    await poll(lambda: _primary_is(fly, "m2"), timeout=10)
    assert not next(m for m in await fly.cluster.machines() if m.id == "m1").running


# -- volumes and snapshots ------------------------------------------------------------------


async def test_extend_says_when_the_machine_must_restart(fly: Fly) -> None:
    done = await fly.cluster.extend_volume("vol_1", 20)
    assert (done.size_gb, done.needs_restart) == (20, False)
    w = fly.world()
    w["apps"][APP]["volumes"][1]["needs_restart"] = True
    fly.state.write_text(json.dumps(w))
    done = await fly.cluster.extend_volume("vol_2", 30)
    assert (done.size_gb, done.needs_restart) == (30, True)
    assert ["volumes", "extend", "vol_2", "--size", "30", "-a", APP, "--yes"] in fly.sent()


async def test_snapshots_name_their_app_whatever_the_environment_says(fly: Fly) -> None:
    """Without -a, flyctl takes the app from FLY_APP or ./fly.toml before the volume."""
    assert fly.flyctl("volumes", "snapshots", "list", "vol_1", "--json",
                      FLY_APP="web").returncode == 1
    cluster = fly.engine(FLY_APP="web")
    assert await cluster.snapshots("vol_1") == []
    assert fly.sent()[-1] == ["volumes", "snapshots", "list", "vol_1", "-a", APP, "--json"]
    await cluster.snapshot_create("vol_1")  # prints a line, not JSON, and no id
    assert fly.sent()[-1] == ["volumes", "snapshots", "create", "vol_1", "-a", APP]
    snaps = await poll(lambda: _taken(cluster), timeout=10)
    assert len(snaps) == 1 and snaps[0].volume_size == 10 and snaps[0].id


async def _taken(cluster: FlyCluster) -> list[Any]:
    snaps = await cluster.snapshots("vol_1")
    return snaps if snaps and snaps[0].status == "created" else []


# -- secrets ------------------------------------------------------------------------------


SECRET = "postgres://app:s3cr3t#Pa55@cardmint-db.flycast:5432/cardmint"


async def test_a_secret_is_staged_on_stdin_whole_even_with_a_hash_sign(fly: Fly) -> None:
    await fly.cluster.stage_secret("web", "DATABASE_URL", SECRET)
    record = fly.records()[-1]
    assert record["argv"] == ["secrets", "import", "--stage", "-a", "web"]
    assert record["stdin"] == f"DATABASE_URL={hashed(SECRET)}"  # not cut at the '#'
    assert "s3cr3t" not in fly.record.read_text()
    assert fly.app("web")["secrets"] == {"DATABASE_URL": hashed(SECRET)}
    assert all("secrets" not in m for m in fly.app("web")["machines"])  # nothing restarted
    assert await fly.cluster.deploy_secrets("web") == 2
    assert fly.sent()[-1] == ["secrets", "deploy", "-a", "web"]
    assert [m["secrets"] for m in fly.app("web")["machines"]] == [
        {"DATABASE_URL": hashed(SECRET)}] * 2
    for bad in ('a"b', "line1\nline2-s3cr3t"):
        with pytest.raises(UsageError) as err:
            await fly.cluster.stage_secret("web", "K", bad)
        assert "s3cr3t" not in str(err.value)
    with pytest.raises(UsageError):
        await fly.cluster.stage_secret("web", "BAD KEY", SECRET)


async def test_a_deploy_cut_off_says_how_to_finish_it(fly: Fly) -> None:
    fly.change(timing={**fly.world()["timing"], "deploy_s": 3})
    await fly.cluster.stage_secret("web", "DATABASE_URL", SECRET)
    cluster = fly.engine(Waits(**{**FAST.__dict__, "deploy_wait_s": 0.5, "slack_s": 0}))
    with pytest.raises(ClusterError) as err:
        await cluster.deploy_secrets("web")
    assert "flyctl secrets deploy -a web" in str(err.value)
    assert "cut off after 2 s" in str(err.value)  # 2 batches of one machine, 2 x 0.5 s each


async def test_secret_never_in_an_error(fly: Fly) -> None:
    fly.fail("secrets import", f"could not parse DATABASE_URL={SECRET} (x)")
    with pytest.raises(ClusterError) as err:
        await fly.cluster.stage_secret("web", "DATABASE_URL", SECRET)
    text = str(err.value)
    assert "s3cr3t" not in text and "secrets import --stage -a web failed (exit 1)" in text
    assert err.value.__cause__ is None and err.value.__context__ is None


# -- errors, logs, identifiers ------------------------------------------------------------


async def test_a_failing_flyctl_is_a_clean_cluster_error(fly: Fly) -> None:
    fly.fail("machine stop", "could not stop machine m1: "
             "postgres://postgres:hunter2@m1:5432 unreachable")
    with pytest.raises(ClusterError) as err:
        await fly.cluster.stop_machine("m1")
    text = str(err.value)
    assert text.startswith(f"flyctl machine stop m1 --signal SIGKILL -a {APP} failed "
                           "(exit 1): Error: could not stop")
    assert "hunter2" not in text and "postgres:***@m1" in text
    with pytest.raises(ClusterError, match="Could not find App"):
        await FlyCluster("nope", flyctl=str(STANDIN), env=fly.env).volumes()


async def test_logs_errors_only_redacted_and_an_empty_buffer_ends(fly: Fly) -> None:
    lines = (await fly.cluster.logs(LogQuery(errors=True))).lines
    assert lines == ["2026-11-29T10:00:01Z app[m1] ord [error]ERROR: disk full "
                     "postgres://postgres:***@x:5432/db"]
    assert len((await fly.cluster.logs(LogQuery())).lines or []) == 2
    assert fly.sent() == [["logs", "-a", APP, "--no-tail"]] * 2
    fly.set_app(APP, logs=[])  # flyctl then polls forever (logs/polling.go)
    began = time.monotonic()
    assert (await fly.cluster.logs(LogQuery())).lines == []
    assert time.monotonic() - began < FAST.logs_s + 5


async def test_runner_timeout_missing_binary_and_bad_json() -> None:
    def slow(argv: list[str], *, input: str | None, timeout: float,
             env: dict[str, str] | None) -> RunResult:
        raise subprocess.TimeoutExpired(argv, timeout)

    with pytest.raises(ClusterError, match="cut off after 3 s"):
        await FlyCluster(APP, runner=slow, timeout_s=3).volumes()
    with pytest.raises(ClusterError, match="flyctl not found"):
        await FlyCluster(APP, flyctl="/nonexistent/flyctl").volumes()

    def not_json(argv: list[str], *, input: str | None, timeout: float,
                 env: dict[str, str] | None) -> RunResult:
        return RunResult(0, "Update available! 0.3.1 -> 0.3.2", "")

    with pytest.raises(ClusterError, match="did not answer JSON"):
        await FlyCluster(APP, runner=not_json).volumes()


async def test_identifiers_are_checked(fly: Fly) -> None:
    with pytest.raises(UsageError):
        FlyCluster("-a evil")
    with pytest.raises(UsageError):
        await fly.cluster.stop_machine("m1 --all")
    with pytest.raises(UsageError):
        await fly.cluster.resize_machine("m1", "--help")
    assert fly.sent() == []


async def test_failover_takes_no_target_and_up_down_say_fly_does_that(fly: Fly) -> None:
    with pytest.raises(UsageError, match="--to"):
        await fly.cluster.failover("m2")
    with pytest.raises(UsageError, match="flyctl postgres create"):
        await fly.cluster.up()
    with pytest.raises(UsageError, match="flyctl apps destroy"):
        await fly.cluster.down()
    assert fly.sent() == []


def test_connect_argv(fly: Fly) -> None:
    assert fly.cluster.connect_argv() == [str(STANDIN), "postgres", "connect", "-a", APP]
    assert fly.sent() == []


# -- the same `cardmint cluster` commands, with CARDMINT_PROVIDER=fly ----------------------


def test_cli_drives_fly(fly: Fly, tmp_path: Path) -> None:
    done = fly.cli(tmp_path, "cluster", "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["provider"] == "fly"
    assert [(n["name"], n["role"]) for n in status["nodes"]] == [
        ("m1", "primary"), ("m2", "replica"), ("m3", "replica")]
    done = fly.cli(tmp_path, "cluster", "switchover", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["new_primary"] == "m2"
    done = fly.cli(tmp_path, "cluster", "resize", "--vm-size", "performance-2x", "--force",
                   "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["primary_after"] == "m1"  # switched back during it
    people = fly.cli(tmp_path, "cluster", "status")
    assert people.returncode == 0 and "m1" in people.stdout and "fly" in people.stdout
    done = fly.cli(tmp_path, "cluster", "logs", "--errors", "--json")
    assert done.returncode == 0, done.stderr
    lines = json.loads(done.stdout)["lines"]
    assert len(lines) == 1 and "disk full" in lines[0] and "leaked" not in lines[0]


def test_cli_refuses_what_fly_does_itself_and_what_two_machines_cannot(
        tmp_path: Path) -> None:
    fly = Fly(tmp_path, machines=2)
    for args, words in ((("cluster", "up"), "flyctl postgres create"),
                        (("cluster", "down"), "flyctl apps destroy"),
                        (("cluster", "failover", "--to", "m2"), "--to"),
                        (("cluster", "add-replica"), "local engine"),
                        (("cluster", "resize", "--memory", "4GB", "--force"), "--vm-size"),
                        (("security", "rotate", "--force"), "CARDMINT_ADMIN_URL")):
        done = fly.cli(tmp_path, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert words in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert fly.sent() == []
    for args in (("cluster", "switchover"), ("drill", "failover", "--force"),
                 ("cluster", "resize", "--vm-size", "performance-2x", "--force")):
        done = fly.cli(tmp_path, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert "at least 3 machines" in done.stdout + done.stderr
    assert set(fly.commands()) == {"machine list"}
