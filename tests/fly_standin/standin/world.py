"""The world behind the stand-in: one JSON file ($FLYCTL_STATE) that every invocation
reads and changes under a lock, and the record ($FLYCTL_RECORD) of what was sent.

Time is real (wall clock) but short: each delay Fly would take is a figure in
`world["timing"]` that a test sets (TIMING holds the defaults). Events that Fly runs on
its own (flyd restarting a machine whose restart policy is `always`, repmgr promoting a
standby once the primary has been unreachable long enough) are stored with the moment
they are due and applied by `settle` at the start of the next invocation that looks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# Seconds. Real Fly: a machine restart takes a few seconds, repmgr needs ~60 s of an
# unreachable primary (reconnect_attempts 6 x reconnect_interval 10), a failover ~90 s
# plus health checks, a deploy minutes per machine, a snapshot restore up to an hour.
TIMING = {"restart_s": 0.3, "boot_s": 0.3, "repmgr_s": 1.0, "failover_s": 0.2,
          "update_s": 0.1, "deploy_s": 0.1, "restore_s": 0.2, "snapshot_s": 0.3}


class Exit(Exception):
    """flyctl ending: `Error: <message>` on stderr (cli.go printError) and a status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def hashed(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def now() -> float:
    return time.time()


def iso(t: float) -> str:
    """Go's time.Time in JSON: RFC 3339 with nanoseconds."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def timing(w: dict[str, Any], key: str) -> float:
    return float((w.get("timing") or {}).get(key, TIMING[key]))


@contextlib.contextmanager
def edit() -> Iterator[dict[str, Any]]:
    """The world, locked, settled to now, and written back when the block ends (also when
    it raises: what flyctl did before failing stays done)."""
    path = os.environ["FLYCTL_STATE"]
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(path) as fh:
            w = json.load(fh)
        settle(w, now())
        try:
            yield w
        finally:
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(w, fh, indent=1)
            os.replace(tmp, path)


def record(argv: list[str], stdin: str | None) -> None:
    entry: dict[str, Any] = {"argv": argv, "t": now()}
    if stdin:
        entry["stdin"] = stdin
    with open(os.environ["FLYCTL_RECORD"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def app_of(w: dict[str, Any], name: str | None) -> dict[str, Any]:
    """An app by name, as GetAppCompact finds it (or does not)."""
    app = (w.get("apps") or {}).get(name or "")
    if app is None:
        raise Exit(f'failed to get app: Could not find App "{name}"')
    return app


def volume_owner(w: dict[str, Any], volume_id: str) -> tuple[str, dict[str, Any]] | None:
    for name, app in (w.get("apps") or {}).items():
        for vol in app.get("volumes") or []:
            if vol["id"] == volume_id:
                return name, vol
    return None


def settle(w: dict[str, Any], t: float) -> None:
    """Apply what Fly did on its own since the last invocation."""
    for app in (w.get("apps") or {}).values():
        for m in app.get("machines") or []:
            due = m.get("restart_at")
            if due is not None and t >= due:  # flyd: restart policy `always`
                m["state"] = "started"
                m["ready_at"] = due + timing(w, "boot_s")
                del m["restart_at"]
        if app.get("postgres"):
            _repmgr(w, app, t)
        for snaps in (w.get("snapshots") or {}).values():
            for snap in snaps:
                if snap["status"] != "created" and t >= snap.pop("due", 0):
                    snap["status"] = "created"
                    snap["id"] = snap.pop("pending_id", snap["id"])


def primary_roles(app: dict[str, Any]) -> tuple[str, ...]:
    return ("leader",) if app.get("manager") == "stolon" else ("primary",)


def _repmgr(w: dict[str, Any], app: dict[str, Any], t: float) -> None:
    """The cluster manager's own failover: once no running primary has been seen for
    `repmgr_s`, a running standby is promoted, on flex only if a majority of the
    registered members is visible (postgres-flex cmd/failover_validation)."""
    heads = primary_roles(app)
    machines = app.get("machines") or []
    if any(m["role"] in heads and m["state"] == "started" for m in machines):
        app.pop("primary_lost_at", None)
        return
    lost = app.get("primary_lost_at")
    if lost is None or t < lost + timing(w, "repmgr_s"):
        return
    members = [m for m in machines if m["role"] not in ("witness", "barman")]
    visible = [m for m in members if m["state"] == "started"]
    if app.get("manager") != "stolon" and len(visible) < len(members) // 2 + 1:
        return  # "Unable to perform failover as quorum can not be met"
    heir = next((m for m in visible if m["role"] == "replica"), None)
    if heir is not None:
        heir["role"] = heads[0]
        app.pop("primary_lost_at", None)


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def render_json(value: Any) -> None:
    """internal/render/render.go JSON: four-space indent, one trailing newline."""
    out(json.dumps(value, indent=4) + "\n")
