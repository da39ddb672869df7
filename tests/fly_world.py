"""The stand-in flyctl's world for the Fly tests (tests/fly_standin/README.md): a flex
Postgres app `cardmint-db` of N machines, a consumer app `web` of two machines, and what
was sent, read back from the stand-in's record."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cardmint.cluster.fly import FlyCluster
from cardmint.cluster.fly.waits import Waits

STANDIN = Path(__file__).parent / "fly_standin" / "flyctl"
APP = "cardmint-db"
# The stand-in's delays are tenths of seconds; so are these (defaults: Fly's own).
FAST = Waits(call_s=30, poll_s=0.05, snapshot_s=10, rejoin_s=15, logs_s=2, proxy_s=15,
             repmgr_s=2, slack_s=5)


def hashed(value: str) -> str:
    """How the stand-in records a secret value (tests/fly_standin/standin/world.py)."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def world(machines: int = 3, manager: str = "repmgr") -> dict[str, Any]:
    head = "primary" if manager == "repmgr" else "leader"
    ms = [{"id": f"m{i}", "name": f"{APP}-{i}", "state": "started", "region": "ord",
           "role": head if i == 1 else "replica", "private_ip": f"fdaa::{i}",
           "volume": f"vol_{i}", "guest": {"cpu_kind": "shared", "cpus": 2,
                                           "memory_mb": 4096}}
          for i in range(1, machines + 1)]
    return {
        "orgs": [{"slug": "personal", "type": "PERSONAL", "name": "Me"},
                 {"slug": "cardmint", "type": "SHARED", "name": "CardMint"}],
        "regions": ["ord", "iad", "ams"],
        "timing": {"restart_s": 0.3, "boot_s": 0.3, "repmgr_s": 0.6, "failover_s": 0.1,
                   "update_s": 0.05, "deploy_s": 0.05, "restore_s": 0.2, "snapshot_s": 0.3},
        "apps": {
            APP: {"org": "cardmint", "postgres": True, "manager": manager,
                  "primary_region": "ord", "deployed": True, "machines": ms,
                  "volumes": [{"id": f"vol_{i}", "name": "pg_data", "size_gb": 10,
                               "region": "ord", "attached_machine_id": f"m{i}"}
                              for i in range(1, machines + 1)],
                  "secrets": {},
                  "logs": [{"timestamp": "2026-11-29T10:00:00Z", "instance": "m1",
                            "region": "ord", "level": "info",
                            "message": "checkpoint complete"},
                           {"timestamp": "2026-11-29T10:00:01Z", "instance": "m1",
                            "region": "ord", "level": "error", "message": "ERROR: disk "
                            "full postgres://postgres:leaked@x:5432/db"}]},
            "web": {"org": "cardmint", "deployed": True, "secrets": {}, "volumes": [],
                    "machines": [{"id": "w1", "state": "started"},
                                 {"id": "w2", "state": "started"}]}}}


class Fly:
    def __init__(self, tmp: Path, machines: int = 3, manager: str = "repmgr",
                 waits: Waits = FAST) -> None:
        self.state = tmp / "state.json"
        self.record = tmp / "record.jsonl"
        self.state.write_text(json.dumps(world(machines, manager)))
        self.env = {"FLYCTL_STATE": str(self.state), "FLYCTL_RECORD": str(self.record)}
        self.cluster = self.engine(waits)

    def engine(self, waits: Waits = FAST, **env: str) -> FlyCluster:
        return FlyCluster(APP, flyctl=str(STANDIN), env={**self.env, **env}, waits=waits)

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def sent(self) -> list[list[str]]:
        return [r["argv"] for r in self.records()]

    def commands(self) -> list[str]:
        """The command words of each call: "machine list", "postgres failover"..."""
        def words(argv: list[str]) -> list[str]:
            if argv[:2] == ["volumes", "snapshots"]:
                return argv[:3]
            return argv[:2] if argv[0] in ("machine", "postgres", "volumes", "secrets",
                                           "apps") else argv[:1]
        return [" ".join(words(argv)) for argv in self.sent()]

    def world(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def change(self, **keys: Any) -> None:
        w = self.world()
        w.update(keys)
        self.state.write_text(json.dumps(w))

    def app(self, name: str = APP) -> dict[str, Any]:
        return self.world()["apps"][name]

    def set_app(self, name: str, **keys: Any) -> None:
        w = self.world()
        w["apps"][name].update(keys)
        self.state.write_text(json.dumps(w))

    def set_machine(self, machine: str, **keys: Any) -> None:
        w = self.world()
        for m in w["apps"][APP]["machines"]:
            if m["id"] == machine:
                m.update(keys)
        self.state.write_text(json.dumps(w))

    def fail(self, prefix: str, message: str) -> None:
        self.change(fail={prefix: message})

    def flyctl(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The stand-in run directly, as an operator would run flyctl."""
        return subprocess.run([sys.executable, str(STANDIN), *args], capture_output=True,
                              text=True, env={**os.environ, **self.env, **env}, timeout=60)

    def cli(self, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`cardmint ARGS` with CARDMINT_PROVIDER=fly against the stand-in."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("CARDMINT_")}
        base |= {"CARDMINT_PROVIDER": "fly", "CARDMINT_FLY_APP": APP,
                 "CARDMINT_HOME": str(tmp), "CARDMINT_FLYCTL": str(STANDIN),
                 "COLUMNS": "200", **self.env, **env}
        return subprocess.run([sys.executable, "-m", "cardmint", *args], capture_output=True,
                              text=True, env=base, timeout=120)
