"""The failures the lab rehearses, each measured: the leader's host partitioned and
healed, a replica's host partitioned, the DCS's quorum lost, the whole cluster
restarted. The tests assert on these results; `bench/lab.py` takes their medians.

Run them with a `Writer` and a `Checker` (watch.py) going; each scenario leaves the lab
whole again (one leader, every member streaming).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cardmint.cluster.pg import process
from cardmint.ops.lab import net, observe, procs
from cardmint.ops.lab.state import Lab, LabHost
from cardmint.ops.lab.watch import Checker, Writer, present

POLL_S = 0.05
TIMEOUT_S = 90.0


def _user(lab: Lab) -> process.OsUser:
    owner = Path(lab.hosts[0].config).stat()
    return process.OsUser(_name(owner.st_uid), owner.st_uid, owner.st_gid) \
        if os.geteuid() == 0 else process.OsUser(None, os.geteuid(), os.getegid())


def _name(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


async def _until(what: str, check: Any, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"lab: {what} not within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def _leader_seen_by(lab: Lab, via: LabHost) -> str | None:
    found = await observe.members(lab, via)
    for name, m in found.items():
        if m.get("role") == "leader":
            return name
    return None


@dataclass
class LeaderPartition:
    old_leader: str
    new_leader: str
    detection_s: float  # cut -> the majority's DCS no longer names the old leader
    promotion_s: float  # that moment -> the new leader accepts writes
    demotion_s: float  # cut -> the isolated old leader stops accepting writes (last seen)
    write_outage_s: float  # the longest gap between acknowledged writes after the cut
    acked_by_isolated: int  # acknowledged by the old leader after the cut
    lost: int  # acknowledged writes the new leader lacks
    rejoin_s: float  # heal -> the old leader streams again
    rewound: bool  # rejoined in place (same data directory: no base backup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def partition_leader(lab: Lab, writer: Writer, checker: Checker, *,
                           before_heal: Callable[[], Awaitable[Any]] | None = None
                           ) -> LeaderPartition:
    """Cut the leader's host off; the majority elects; heal; the old leader rejoins.
    `before_heal` runs while the old leader is still cut off, after the new one took
    writes (a test waits there for the application to find the new leader)."""
    old = lab.host(await observe.current_leader(lab))
    majority = [h for h in lab.hosts if h.name != old.name]
    inode = await asyncio.to_thread(lambda: os.stat(old.datadir).st_ino)
    await writer.more(20)
    cut = time.monotonic()
    net.cut(old.host)
    detected = promoted = 0.0
    seen: str | None = None
    new = ""
    deadline = cut + TIMEOUT_S
    while not promoted:
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(
                f"lab: no new leader after the partition (majority sees {seen}; writable "
                f"last: {checker.writable_at}; checker rounds {checker.rounds}, errors "
                f"{dict(checker.errors)})")
        seen = await _leader_seen_by(lab, majority[0])
        if not detected and seen != old.name:
            detected = time.monotonic()
        if seen and seen != old.name and checker.writable_at.get(seen, 0) > cut:
            new, promoted = seen, checker.writable_at[seen]
        await asyncio.sleep(POLL_S)
    # the old leader must have stopped accepting writes: none seen writable for a while
    await _until("the isolated leader demoting",
                 lambda: time.monotonic() - checker.writable_at.get(old.name, 0) > 1.0)
    await writer.more(20)
    outage = writer.outage(cut)
    isolated = [a for a in writer.after(cut) if a.member == old.name]
    if before_heal is not None:
        await before_heal()
    healed = time.monotonic()
    net.heal(old.host)
    await observe.wait_members(lab, timeout=TIMEOUT_S)
    rejoined = time.monotonic()
    acked = list(writer.acks)  # before the read: later acks are not in its snapshot
    have = await present(lab, lab.host(new))
    lost = [a for a in acked if a.id not in have]
    same = await asyncio.to_thread(lambda: os.stat(old.datadir).st_ino) == inode
    return LeaderPartition(
        old_leader=old.name, new_leader=new, detection_s=round(detected - cut, 3),
        promotion_s=round(promoted - detected, 3),
        demotion_s=round(checker.writable_at.get(old.name, cut) - cut, 3),
        write_outage_s=round(outage, 3), acked_by_isolated=len(isolated), lost=len(lost),
        rejoin_s=round(rejoined - healed, 3), rewound=same)


@dataclass
class ReplicaPartition:
    replica: str
    was_sync: bool
    leader_kept: bool
    write_stall_s: float  # the longest gap between acknowledged writes while it was cut
    rejoin_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def partition_replica(lab: Lab, writer: Writer) -> ReplicaPartition:
    """Cut the synchronous standby's host (the worst replica to lose): writes go on once
    Patroni names the other replica synchronous; heal; it streams again."""
    found = await observe.members(lab)
    leader = next(n for n, m in found.items() if m.get("role") == "leader")
    target = next((n for n, m in found.items() if m.get("role") == "sync_standby"),
                  next(n for n in found if n != leader))
    host = lab.host(target)
    await writer.more(20)
    cut = time.monotonic()
    net.cut(host.host)
    await writer.more(50)
    stall = writer.outage(cut)
    kept = await observe.current_leader(lab, lab.host(leader)) == leader
    healed = time.monotonic()
    net.heal(host.host)
    await observe.wait_members(lab, timeout=TIMEOUT_S)
    return ReplicaPartition(replica=target, was_sync=found[target].get("role") ==
                            "sync_standby", leader_kept=kept, write_stall_s=round(stall, 3),
                            rejoin_s=round(time.monotonic() - healed, 3))


@dataclass
class QuorumLoss:
    leader: str
    stopped_etcd: list[str]
    leader_kept_writing: bool  # failsafe mode: every member confirmed it
    writes_during: int
    watched_s: float
    recovered_s: float  # etcd back -> one leader, every member streaming

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def lose_quorum(lab: Lab, writer: Writer, etcd: str, *, watch_s: float) -> QuorumLoss:
    """Stop two of the three etcd members (by PID) for `watch_s` (longer than the ttl,
    so the leader key would have expired): with failsafe_mode the leader stays primary
    while every Patroni answers it; then start them again."""
    leader = await observe.current_leader(lab)
    stopped = [h for h in lab.hosts if h.name != leader][:2]
    if len(stopped) < 2:
        stopped = lab.hosts[:2]
    await writer.more(10)
    began = time.monotonic()
    for h in stopped:
        await procs.stop_etcd(h)
    count = len(writer.acks)
    await asyncio.sleep(watch_s)  # a watched window, not a wait for state
    during = len(writer.acks) - count
    still = lab.host(leader)
    writing = bool(writer.acks) and writer.acks[-1].member == still.name and \
        time.monotonic() - writer.acks[-1].at < 2.0
    user = _user(lab)
    back = time.monotonic()
    for h in stopped:
        procs.start_etcd(lab, h, user, etcd)
    await observe.wait_etcd(lab)
    await observe.wait_members(lab, timeout=TIMEOUT_S)
    return QuorumLoss(leader=leader, stopped_etcd=[h.name for h in stopped],
                      leader_kept_writing=writing, writes_during=during,
                      watched_s=round(time.monotonic() - began, 3),
                      recovered_s=round(time.monotonic() - back, 3))


@dataclass
class Restart:
    leader_before: str
    leader_after: str
    leaders_after: int
    lost: int
    restart_s: float  # everything started -> one leader, every member streaming

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def restart_all(lab: Lab, writer: Writer, patroni: Path, etcd: str) -> Restart:
    """Stop every Patroni (replicas first) and etcd, start them all again."""
    before = await observe.current_leader(lab)
    await writer.more(10)
    order = sorted(lab.hosts, key=lambda h: h.name == before)  # the leader last
    for h in order:
        await procs.stop_patroni(h)
    for h in lab.hosts:
        await procs.stop_etcd(h)
    user = _user(lab)
    began = time.monotonic()
    for h in lab.hosts:
        procs.start_etcd(lab, h, user, etcd)
    for h in lab.hosts:
        procs.start_patroni(lab, h, user, patroni)
    await observe.wait_etcd(lab)
    found = await observe.wait_members(lab, timeout=TIMEOUT_S)
    took = time.monotonic() - began
    leaders = [n for n, m in found.items() if m.get("role") == "leader"]
    await writer.more(10)
    acked = list(writer.acks)
    have = await present(lab, lab.host(leaders[0]))
    return Restart(leader_before=before, leader_after=leaders[0], leaders_after=len(leaders),
                   lost=len([a for a in acked if a.id not in have]),
                   restart_s=round(took, 3))
