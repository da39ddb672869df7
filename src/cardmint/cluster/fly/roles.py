"""Which machine is the primary, as flyctl itself decides it.

A Fly Postgres machine's role is only in the output of its `role` health check
(postgres-flex internal/flycheck/role.go; no metadata carries it), and flyctl trusts that
output only while the check is `passing` (internal/command/postgres/postgres.go
machineRole). Stolon clusters say `leader` and `replica`; flex (repmgr) says `primary`,
`replica`, `zombie` (a primary that lost its majority or came back after another was
promoted: not writable), `witness`, `barman`, `failed` or `unknown`. Two running
machines both claiming primary is a split brain: every command that would act on "the
primary" refuses it.

Flex needs a majority: repmgr promotes only when more than half of the registered members
see each other (postgres-flex cmd/failover_validation), and `flyctl postgres failover`
refuses fewer than 3 machines ("Not enough machines to meet quorum requirements").
"""

from __future__ import annotations

from collections.abc import Sequence

from cardmint.cluster.fly.machines import FLEX, Machine
from cardmint.errors import ClusterError

PRIMARY = "primary"
REPLICA = "replica"
UNKNOWN = "unknown"
VOCABULARY = {
    "primary": PRIMARY, "leader": PRIMARY,  # flex, stolon
    "replica": REPLICA, "standby": REPLICA,
    "zombie": "zombie", "witness": "witness", "barman": "barman", "failed": "failed",
}
FLEX_QUORUM = 3


def role_of(machine: Machine) -> str:
    """The machine's role in CardMint's words; `unknown` unless its role check passes."""
    check = machine.check("role")
    if check is None or check.status != "passing":
        return UNKNOWN
    return VOCABULARY.get(check.output.strip().lower(), UNKNOWN)


def role_check(machine: Machine) -> str | None:
    """The role check as flyctl shows it (`passing: primary`), for reports."""
    check = machine.check("role")
    return None if check is None else f"{check.status}: {check.output.strip() or '-'}"


def primaries(machines: Sequence[Machine]) -> list[str]:
    """Every running machine whose passing role check says primary (or leader)."""
    return [m.id for m in machines if m.running and role_of(m) == PRIMARY]


def primary_id(machines: Sequence[Machine]) -> str | None:
    """The one running primary; None if there is none; a ClusterError if two claim it."""
    found = primaries(machines)
    if len(found) > 1:
        raise ClusterError(split_brain(found))
    return found[0] if found else None


def split_brain(ids: Sequence[str]) -> str:
    return (f"machines {', '.join(ids)} all claim to be primary (a split brain): nothing "
            "was changed; stop the one that should not be (`flyctl machine stop ID`), check "
            "`cardmint cluster status`, then try again")


def is_flex(machines: Sequence[Machine]) -> bool:
    return bool(machines) and machines[0].manager == FLEX


def quorum_refusal(machines: Sequence[Machine], what: str) -> str | None:
    """Why `what` cannot run on a flex cluster this small, or None."""
    if not is_flex(machines) or len(machines) >= FLEX_QUORUM:
        return None
    return (f"{what} needs a flex cluster of at least {FLEX_QUORUM} machines; this one has "
            f"{len(machines)}. repmgr promotes only with a majority, and `flyctl postgres "
            "failover` refuses fewer than 3 (\"Not enough machines to meet quorum "
            "requirements\"): add one with `flyctl machine clone PRIMARY_ID -a APP` first")
