"""The command line as a person or a script runs it: JSON contracts, exit codes, psql."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardmint.db import migrate
from support import TestCluster

ROOT = Path(__file__).resolve().parent.parent


def cardmint(pg: TestCluster | None, *args: str,
             timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["COLUMNS"] = "200"  # rich draws tables for an 80-column terminal otherwise
    if pg is not None:
        env["CARDMINT_HOME"] = str(pg.home)
    return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout


async def test_cluster_status_json_contract(pg: TestCluster) -> None:
    done = cardmint(pg, "cluster", "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["provider"] == "local"
    assert sorted(n["role"] for n in report["nodes"]) == ["primary", "replica"]
    replica = next(n for n in report["nodes"] if n["role"] == "replica")
    assert replica["state"] == "streaming" and replica["running"] is True
    people = cardmint(pg, "cluster", "status")
    assert people.returncode == 0 and "node1" in people.stdout and "primary" in people.stdout


async def test_cluster_up_adopts_the_running_cluster(pg: TestCluster) -> None:
    done = cardmint(pg, "cluster", "up", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["adopted"] is True and report["created"] is False and report["started"] == []


@pytest.mark.parametrize("node, expected", [("replica", "t"), ("primary", "f"), ("node1", "f")])
async def test_connect_runs_psql_on_the_node_with_that_role(pg: TestCluster, node: str,
                                                           expected: str) -> None:
    done = cardmint(pg, "cluster", "connect", node, "-Atc", "select pg_is_in_recovery()")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


async def test_db_current_is_head(pg: TestCluster) -> None:
    done = cardmint(pg, "db", "current", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"current": migrate.head(), "head": migrate.head(),
                                       "up_to_date": True}


@pytest.mark.parametrize("args", [
    ("cluster", "connect", "nosuchnode", "-c", "select 1"),
    ("cluster", "up", "--replicas", "-1"),
    ("cluster", "status", "--bogus"),
    ("cluster", "up", "--replicas", "3"),  # differs from the running cluster
    ("serve", "--host", "0.0.0.0"),
    ("health", "--bogus"),
    ("stats", "--window", "x"),
])
async def test_usage_errors_exit_3_with_a_message(pg: TestCluster, args: tuple[str, ...]) -> None:
    done = cardmint(pg, *args)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.strip()
    no_traceback(done)
    if "--json" in args:
        assert json.loads(done.stdout)["ok"] is False


def test_without_a_cluster_commands_say_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    env["CARDMINT_HOME"] = str(tmp_path / "none")
    for args in (("cluster", "status", "--json"), ("db", "current")):
        done = subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)
        assert done.returncode in (2, 3), done
        assert "cluster up" in done.stderr
        no_traceback(done)


def test_production_cli_shim() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "production_cli.py"), "bogus"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "usage" in done.stderr


def test_figures_read_as_words() -> None:
    """Issue 17 item 8: no {'idle': 7} or 'None ms' in what people read."""
    from cardmint.cli.output import counts, measured

    assert counts({"idle": 7, "active": 2}) == "7 idle, 2 active" and counts({}) == "none"
    assert measured(None, "ms") == "not measured" and measured(12.5, "ms") == "12.5 ms"
