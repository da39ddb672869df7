"""Failover, sync-guard and drill rules as functions of observed state: no cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cardmint.cluster.handover import Candidate, choose_target, promoted
from cardmint.cluster.local.failover import controldata_fields
from cardmint.cluster.local.syncrep import (
    ALERT,
    DEGRADE,
    NONE,
    RESTORE,
    Observation,
    decide,
    named,
    sync_names,
)
from cardmint.cluster.state import FENCED, ClusterState, Node
from cardmint.errors import ClusterError, NoCluster, UsageError
from cardmint.ops.drills import failover_drill
from cardmint.ops.drills.frame import CONTRACT, budget, render_markdown
from cardmint.ops.drills.probe import lost, outage
from support import make_settings

GiB = 1 << 30


def cluster(*names: str) -> ClusterState:
    return ClusterState(
        home="/h", bindir="/b", pg_version="15.1", os_user=None, status="ready", sync=True,
        nodes=[Node(name=n, role="primary" if i == 0 else "replica", port=5000 + i,
                    datadir=f"/h/nodes/{n}") for i, n in enumerate(names)])


# -- choosing the replica to promote ---------------------------------------------------


def test_the_replica_with_the_most_wal_is_chosen() -> None:
    found = [Candidate("node2", True, 5 * GiB), Candidate("node3", True, 5 * GiB + 10),
             Candidate("node4", None, None)]
    assert choose_target(found).name == "node3"
    assert choose_target(found, "node3").name == "node3"


def test_a_requested_replica_behind_another_is_refused() -> None:
    found = [Candidate("node2", True, 100), Candidate("node3", True, 164)]
    with pytest.raises(ClusterError, match="64 bytes of WAL behind node3"):
        choose_target(found, "node2")
    with pytest.raises(UsageError, match="not a replica"):
        choose_target(found, "node9")


def test_nodes_that_cannot_be_promoted() -> None:
    with pytest.raises(ClusterError, match="not reachable"):
        choose_target([Candidate("node2", None, None)], "node2")
    with pytest.raises(ClusterError, match="not in recovery"):
        choose_target([Candidate("node2", False, 10)], "node2")
    with pytest.raises(ClusterError, match="no reachable replica"):
        choose_target([Candidate("node2", None, None), Candidate("node3", False, 9)])


def test_after_promotion_the_old_primary_is_fenced_out_of_every_dsn() -> None:
    state = cluster("node1", "node2", "node3")
    promoted(state, "node2", "node1")
    assert state.primary.name == "node2"
    assert state.node("node1").role == FENCED
    assert [n.name for n in state.replicas] == ["node3"]
    dsns = state.dsns()
    # the multi-host primary DSN tries the new primary first, and never the fenced node
    assert "@127.0.0.1:5001,127.0.0.1:5002/" in dsns["app"]
    assert dsns["app"].endswith("target_session_attrs=read-write")
    assert all(":5000" not in d for d in (dsns["app"], dsns["owner"], *dsns["replicas"]))
    assert sync_names(state) == "FIRST 1 (node3)"


def test_controldata_is_read_as_fields() -> None:
    text = ("pg_control version number:            1300\n"
            "Database cluster state:               shut down\n"
            "Latest checkpoint location:           0/3000028\n")
    fields = controldata_fields(text)
    assert fields["Database cluster state"] == "shut down"
    assert fields["Latest checkpoint location"] == "0/3000028"


# -- the sync guard ---------------------------------------------------------------------


def obs(configured: str = "FIRST 1 (node2, node3)", streaming: tuple[str, ...] = ("node2",),
        wait: float | None = None, wanted: bool = True) -> Observation:
    return Observation(wanted=wanted, configured=configured, candidates=("node2", "node3"),
                       streaming=streaming, oldest_wait_s=wait, waiting=1 if wait else 0)


def test_synchronous_and_streaming_is_left_alone() -> None:
    d = decide(obs(), None, 100.0, bound_s=5, strict=False)
    assert (d.action, d.ok, d.missing_since) == (NONE, True, None)


def test_no_standby_streaming_degrades_only_after_the_bound() -> None:
    first = decide(obs(streaming=()), None, 100.0, bound_s=5, strict=False)
    assert first.action == NONE and first.missing_since == 100.0 and not first.ok
    still = decide(obs(streaming=()), first.missing_since, 104.9, bound_s=5, strict=False)
    assert still.action == NONE
    late = decide(obs(streaming=()), still.missing_since, 105.0, bound_s=5, strict=False)
    assert late.action == DEGRADE and "node2, node3" in late.reason


def test_commits_stuck_past_the_bound_degrade_at_once() -> None:
    d = decide(obs(streaming=(), wait=6.0), None, 100.0, bound_s=5, strict=False)
    assert d.action == DEGRADE and "waiting" in d.reason
    # even with a standby connected (a stalled disk): the wait is what users feel
    assert decide(obs(wait=6.0), None, 100.0, bound_s=5, strict=False).action == DEGRADE


def test_strict_mode_only_alerts() -> None:
    d = decide(obs(streaming=(), wait=6.0), None, 100.0, bound_s=5, strict=True)
    assert d.action == ALERT


def test_a_degraded_cluster_is_restored_when_a_standby_streams() -> None:
    assert decide(obs(configured="", streaming=()), None, 1.0, bound_s=5,
                  strict=False).action == NONE
    back = decide(obs(configured="", streaming=("node3",)), None, 1.0, bound_s=5, strict=False)
    assert back.action == RESTORE and back.ok
    # a standby that is not one of the cluster's replicas does not count
    other = decide(obs(configured="", streaming=("pg_basebackup",)), None, 1.0, bound_s=5,
                   strict=False)
    assert other.action == NONE


def test_an_asynchronous_cluster_is_never_touched() -> None:
    d = decide(obs(configured="", streaming=(), wanted=False), None, 1.0, bound_s=5,
               strict=False)
    assert d.action == NONE and d.ok


def test_standby_names_are_parsed() -> None:
    assert named("FIRST 1 (node2, node3)") == ["node2", "node3"]
    assert named("ANY 2 (a,\"b\")") == ["a", "b"]
    assert named("2 (a, b)") == ["a", "b"]
    assert named("node2") == ["node2"]
    assert named("*") == ["*"]


# -- the drill's arithmetic ---------------------------------------------------------------


def test_outage_runs_from_the_last_write_on_the_old_timeline_to_the_first_on_the_new() -> None:
    acks = [(1, 10.00), (2, 10.01), (3, 10.02), (5, 10.11), (6, 10.12)]
    timelines = {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2}
    figures = outage(acks, timelines, killed_at=10.015, new_timeline=2)
    assert figures["write_outage_s"] == pytest.approx(0.09)
    assert figures["kill_to_first_write_s"] == pytest.approx(0.095)
    # id 3 was acknowledged after the kill, by a backend that outlived its postmaster
    assert figures["acks_after_kill_on_old_timeline"] == 1
    assert lost(acks, set(timelines)) == []
    assert lost(acks, {1, 2, 5, 6}) == [3]


def test_no_write_on_the_new_timeline_means_no_outage_figure() -> None:
    figures = outage([(1, 1.0)], {1: 1}, killed_at=1.5, new_timeline=2)
    assert figures["write_outage_s"] is None and figures["kill_to_first_write_s"] is None


def test_the_markdown_report_names_every_figure() -> None:
    report = {k: None for k in CONTRACT} | {
        "ok": True, "provider": "local", "detection_s": 0.004, "promotion_s": 0.051,
        "write_outage_s": 0.07, "acknowledged_writes": 300, "lost_writes": 0,
        "old_primary": "node1", "new_primary": "node2", "health": "warn", "rejoined": True,
        "started_at": datetime(2025, 6, 7, 1, 30, tzinfo=UTC), "sync": True, "timeline": 2,
        "failover": {"timings_s": {"fence": 0.002, "choose": 0.003, "promote": 0.045,
                                   "save_state": 0.006}},
        "rejoin": {"method": "rewind"}, "kill_to_first_write_s": 0.072}
    report["outage_budget_s"] = budget(report)
    assert report["outage_budget_s"] == {"detection": 0.004, "fence": 0.002, "choose": 0.003,
                                         "promote": 0.045, "application": 0.018}
    text = render_markdown(report)
    for needle in ("PASS", "node1", "node2", "0.070 s", "| Acknowledged writes lost | 0 |",
                   "synchronous", "promote: 45.0 ms", "application: 18.0 ms",
                   "save_state 6.0 ms", "rewind"):
        assert needle in text, needle


async def test_the_drill_refuses_outside_a_maintenance_window(tmp_path: Path) -> None:
    tuesday_noon = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
    with pytest.raises(UsageError, match="--force"):
        await failover_drill(make_settings(tmp_path), now=tuesday_noon)
    # inside the monthly window it gets past the guard (and finds no cluster here)
    first_saturday = datetime(2025, 6, 7, 2, 0, tzinfo=UTC)
    with pytest.raises(NoCluster, match="no cluster at"):
        await failover_drill(make_settings(tmp_path), now=first_saturday)
