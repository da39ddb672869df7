import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cardmint import secretfile
from cardmint.cluster.state import with_topology
from cardmint.config import Settings


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(_env_file=None, home=tmp_path, **kw)  # type: ignore[call-arg]


def test_runbook_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert (s.pool_min, s.pool_max) == (5, 20)
    assert (s.latency_p95_warn_ms, s.latency_p95_critical_ms) == (100, 150)
    assert (s.pool_utilization_warn_pct, s.pool_utilization_critical_pct) == (80, 90)
    assert (s.replica_lag_warn_s, s.replica_lag_critical_s) == (10, 30)
    assert (s.storage_warn_pct, s.storage_critical_pct) == (70, 85)
    assert s.pgbouncer_connections == 100
    assert s.read_replica_read_write_ratio == 5
    assert (s.scale_cpu_pct, s.scale_cpu_for_min) == (75, 15)
    assert (s.scale_memory_pct, s.scale_memory_for_min) == (85, 10)
    assert (s.scale_latency_p95_ms, s.scale_latency_for_min) == (100, 5)
    assert s.api_host == "127.0.0.1"


def test_environment_and_comma_separated_replicas(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CARDMINT_DATABASE_URL", "postgresql://app:pw1@db1/cardmint")
    monkeypatch.setenv("CARDMINT_REPLICA_URLS",
                       "postgresql://app:pw2@db2/cardmint, postgresql://app:pw3@db3/cardmint")
    monkeypatch.setenv("CARDMINT_POOL_MAX", "30")
    s = settings(tmp_path)
    assert s.database_url.get_secret_value() == "postgresql://app:pw1@db1/cardmint"
    assert [u.get_secret_value() for u in s.replica_urls] == [
        "postgresql://app:pw2@db2/cardmint", "postgresql://app:pw3@db3/cardmint"]
    assert s.pool_max == 30


@pytest.mark.parametrize("kw", [
    {"pool_min": 30, "pool_max": 20},
    {"replica_lag_warn_s": 40},
    {"storage_warn_pct": 90},
    {"pool_max": 0},
    {"api_port": 70000},
])
def test_contradictions_are_refused(tmp_path: Path, kw: dict) -> None:
    with pytest.raises(ValidationError):
        settings(tmp_path, **kw)


def test_dsns_come_from_state_and_secrets(tmp_path: Path) -> None:
    state = {"dsns": {"app": "postgresql://cardmint_app@127.0.0.1:5001,127.0.0.1:5002/cardmint"
                             "?target_session_attrs=read-write",
                      "owner": "postgresql://cardmint_owner@127.0.0.1:5001/cardmint",
                      "replicas": ["postgresql://cardmint_app@127.0.0.1:5002/cardmint"]}}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    secretfile.write(tmp_path / "secrets.env", {
        secretfile.role_key("cardmint_app"): "app-secret",
        secretfile.role_key("cardmint_owner"): "owner-secret",
    })
    assert settings(tmp_path).database_url is None  # the settings read no files of ours
    s = with_topology(settings(tmp_path))
    assert s.database_url.get_secret_value() == (
        "postgresql://cardmint_app:app-secret@127.0.0.1:5001,127.0.0.1:5002/cardmint"
        "?target_session_attrs=read-write")
    assert s.migration_url.get_secret_value().startswith("postgresql://cardmint_owner:owner-secret@")
    assert s.replica_urls[0].get_secret_value() == (
        "postgresql://cardmint_app:app-secret@127.0.0.1:5002/cardmint")
    # the environment wins over the state file
    s2 = with_topology(settings(tmp_path, database_url="postgresql://other@h/db"))
    assert s2.database_url.get_secret_value() == "postgresql://other@h/db"
    # the data layer's topology follows the file: a replica added shows at the next look
    assert s.topology is not None and s.topology.pooler_ports() == set()
    state["dsns"]["replicas"].append("postgresql://cardmint_app@127.0.0.1:5003/cardmint")
    state["pooler"] = {"port": 6432}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    os.utime(tmp_path / "cluster.json", ns=(1, 1))  # a new stamp however fast the write
    assert [d.rsplit("@", 1)[1] for d in s.topology.replica_dsns() or []] == [
        "127.0.0.1:5002/cardmint", "127.0.0.1:5003/cardmint"]
    assert s.topology.pooler_ports() == {6432}


def test_printing_settings_shows_no_password(tmp_path: Path) -> None:
    s = settings(tmp_path, database_url="postgresql://app:hunter2@db/cardmint",
                 replica_urls="postgresql://app:hunter3@db2/cardmint")
    for text in (str(s), repr(s), json.dumps(s.describe())):
        assert "hunter2" not in text and "hunter3" not in text
    assert s.describe()["database_url"] == "postgresql://app:***@db/cardmint"


def test_secrets_file_is_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    secretfile.write(path, {"A": "1", "B": "two=2"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert secretfile.read(path) == {"A": "1", "B": "two=2"}
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.env"]  # no temp file left
