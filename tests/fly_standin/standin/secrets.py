"""`secrets import` and `secrets deploy`.

internal/command/secrets/parser.go reads stdin: NAME=VALUE lines; an unquoted `#` starts
a comment, so it cuts the value; one pair of surrounding quotes is taken off. set.go and
secrets.go: without --stage the secrets are set and then every machine of the app is
restarted as a rolling deploy (internal/command/deploy: a third of the machines at a
time, each waited for up to 5 minutes to start and 5 more for its health checks); with
--stage they are only stored. deploy.go: the staged secrets go out the same way, and an
app that has no machines is an error.
"""

from __future__ import annotations

import math
import time
from typing import Any

from standin.world import Exit, app_of, edit, hashed, out, timing


def parse(text: str) -> dict[str, str]:
    """The NAME=VALUE rules of flyctl's secrets parser (single-line values)."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Exit(f"Failed to parse secrets from stdin: Secrets must be provided as "
                       f"NAME=VALUE pairs ({line} is invalid)")
        key, value = key.strip(), value.lstrip(" ")
        before, hash_sign, _ = value.partition("#")
        if hash_sign and before.count('"') % 2 == 0:
            value = before.rstrip(" ")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pairs[key] = value
    return pairs


def recorded_stdin(text: str) -> str:
    """What a test may see of stdin: each name with its parsed value hashed."""
    try:
        return "\n".join(f"{k}={hashed(v)}" for k, v in parse(text).items())
    except Exit:
        return "(unparsable)"


def _rolling(name: str) -> None:
    """The machines restart with the app's current secrets, a batch at a time."""
    with edit() as w:
        app = app_of(w, name)
        ids = [m["id"] for m in app.get("machines") or []]
        step = timing(w, "deploy_s")
    pool = max(1, math.ceil(len(ids) * 0.33))
    out(f"Updating existing machines in '{name}' with rolling strategy\n")
    for first in range(0, len(ids), pool):
        batch = ids[first:first + pool]
        for mid in batch:
            out(f"  Updating {mid}\n")
        time.sleep(step)
        with edit() as w:
            app = w["apps"][name]
            for m in app["machines"]:
                if m["id"] in batch:
                    m["secrets"] = dict(app.get("secrets") or {})
        for mid in batch:
            out(f"  Machine {mid} update succeeded\n")
    out("  Checking DNS configuration for " f"{name}.fly.dev\n")


def import_(args: Any) -> None:
    name = args.app()
    pairs = parse(args.stdin)
    if not pairs:
        raise Exit("requires at least one SECRET=VALUE pair")
    with edit() as w:
        app = app_of(w, name)
        app.setdefault("secrets", {}).update({k: hashed(v) for k, v in pairs.items()})
        machines = app.get("machines") or []
        deployed = app.get("deployed", True)
    if args.get("stage"):
        out("Secrets have been staged, but not set on VMs. Deploy or update machines in "
            "this app for the secrets to take effect.\n")
        return
    if not deployed and not machines:
        out("Secrets are staged for the first deployment\n")
        return
    _rolling(name)


def deploy(args: Any) -> None:
    name = args.app()
    with edit() as w:
        app = app_of(w, name)
        if not app.get("deployed", True) or not app.get("machines"):
            raise Exit("no machines available to deploy")
    _rolling(name)
