"""How long flyctl may take, from its own waits, and the bounds CardMint gives it.

Every bound is flyctl's own longest wait for that command plus `slack_s`, so CardMint
never cuts off a run flyctl would still finish. The figures (flyctl ad0172fa):

- health checks: internal/watch/watch.go waits up to 300 s for every check to pass.
- `postgres failover` (internal/command/postgres/failover.go, flex): stop the leader,
  start and promote the new one over ssh, wait 30 s for the old one to stop, restart it,
  60 x 1 s for the leadership to swap, then the health checks: about 90 s of steps plus
  up to 300 s. Stolon: 30 x 1 s for the leader to step down, then the health checks.
- `machine update`: --wait-timeout (default 300 s) to settle, then the health checks
  (internal/machine/update.go).
- `secrets deploy` / `secrets import` without --stage: a rolling restart of the app's
  machines, ceil(N x 0.33) at a time, each waited for up to 5 minutes to start and 5 more
  to pass its checks (internal/command/deploy/machines.go DefaultWaitTimeout,
  DefaultMaxUnavailable).
- `postgres create --snapshot-id`: the restoring machine may take an hour to start, each
  other machine 5 minutes, then the health checks (flypg/launcher.go).
- repmgr declares a primary dead after about 60 s (6 reconnect attempts 10 s apart) and
  promotes only with a majority (postgres-flex internal/flypg/repmgr.go).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Waits:
    call_s: float = 60.0  # a flyctl call that waits on no machine
    health_s: float = 300.0
    failover_steps_s: float = 90.0
    update_wait_s: int = 300  # sent as `machine update --wait-timeout`
    deploy_wait_s: float = 300.0
    deploy_max_unavailable: float = 0.33
    restore_first_s: float = 3600.0
    restore_other_s: float = 300.0
    slack_s: float = 120.0
    poll_s: float = 2.0
    snapshot_s: float = 300.0  # until a scheduled snapshot shows as created
    repmgr_s: float = 60.0  # until repmgr gives up on an unreachable primary
    rejoin_s: float = 300.0  # a started machine until it runs as a replica
    logs_s: float = 30.0  # `logs --no-tail` polls an empty buffer forever
    proxy_s: float = 120.0  # `flyctl proxy` until its port listens (DNS, WireGuard)

    @property
    def failover_s(self) -> float:
        return self.failover_steps_s + self.health_s + self.slack_s

    @property
    def update_s(self) -> float:
        return self.update_wait_s + self.health_s + self.slack_s

    def deploy_s(self, machines: int) -> float:
        """A rolling restart of `machines` machines, every batch at its longest."""
        batch = max(1, math.ceil(machines * self.deploy_max_unavailable))
        batches = math.ceil(max(machines, 1) / batch)
        return batches * 2 * self.deploy_wait_s + self.slack_s

    def restore_s(self, machines: int) -> float:
        """`postgres create --snapshot-id` of a cluster of `machines` machines."""
        return (self.restore_first_s + max(machines - 1, 0) * self.restore_other_s
                + self.health_s + self.slack_s)

    @property
    def promotion_s(self) -> float:
        """A killed primary until repmgr has promoted another (detection, then promote)."""
        return self.repmgr_s * 2 + self.slack_s
