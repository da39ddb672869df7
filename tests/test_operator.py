"""The on-call operator's night, as the commands meet it: what a command says when the
settings point at no cluster, and the wording and exit codes of the usual faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WRONG_HOME = (("health",), ("cluster", "status"), ("stats",), ("alerts",), ("test-card",),
              ("backup", "list"), ("db", "current"), ("storage",), ("cluster", "logs"),
              ("drill", "failover", "--force"))


def cardmint(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
    return subprocess.run([sys.executable, "-m", "cardmint", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", WRONG_HOME, ids=" ".join)
def test_no_cluster_here_is_a_setting_not_an_outage(tmp_path: Path, args: tuple[str]) -> None:
    """In a shell without CARDMINT_HOME: no P0, no advice that would make a second, empty
    cluster; the home it looked in and how to point it elsewhere."""
    done = cardmint(tmp_path, *args)
    said = done.stdout + done.stderr
    assert done.returncode == 3, said
    assert "no cluster at ./.cardmint" in said and "CARDMINT_HOME" in said, said
    assert "P0" not in said and "critical" not in said and "Traceback" not in said
    assert not (tmp_path / ".cardmint").exists()  # looking made nothing
