"""The `replication_slots` health check: an inactive slot keeps every WAL segment since its
restart point, so a replica removed without its slot fills the primary's disk."""

from __future__ import annotations

from typing import Any

from cardmint.ops.health.checks import WARN, Check, check


def slot_check(node: str, slots: list[dict[str, Any]]) -> Check:
    """warn (P2) while any slot on the primary is inactive; value: how many are."""
    inactive = [s for s in slots if not s["active"]]
    if not inactive:
        return check("replication_slots", 0, "inactive", 0, None, node=node,
                     detail=f"{len(slots)} slot(s), all active")
    held = ", ".join(f"{s['slot_name']} holds {(s['retained_bytes'] or 0) / 2**20:.1f} MiB"
                     for s in inactive)
    return check("replication_slots", len(inactive), "inactive", 0, None, node=node,
                 status=WARN, on_warn="P2",
                 detail=f"inactive slot(s) keep WAL until dropped: {held}; bring the replica "
                        "back, or drop the slot (`cardmint cluster remove-replica NODE`)")
