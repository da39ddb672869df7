"""`logs`: internal/command/logs/logs.go prints each entry with internal/render/logs.go
(`TIME PROVIDER[INSTANCE] REGION [LEVEL]MESSAGE`, no space before the message) or as JSON
with --json. With --no-tail, logs/polling.go returns after the first page that has
entries, but keeps polling while the buffer is empty: on an app with no recent lines it
never returns."""

from __future__ import annotations

import time
from typing import Any

from standin.world import app_of, edit, out, render_json


def _entry(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    return {"timestamp": "2026-11-29T10:00:00Z", "instance": "m1", "region": "ord",
            "level": "info", "message": str(raw), "provider": "app"}


def logs(args: Any) -> None:
    name = args.app()
    with edit() as w:
        entries = [_entry(e) for e in app_of(w, name).get("logs") or []]
    machine = args.get("machine")
    if machine:
        entries = [e for e in entries if e.get("instance") == machine]
    if not entries:
        while True:  # polling an empty buffer, with backoff, until killed
            time.sleep(4.096)
    for e in entries:
        if args.get("json"):
            render_json({"level": e["level"], "instance": e["instance"], "message":
                         e["message"], "region": e["region"], "timestamp": e["timestamp"],
                         "meta": {"Event": {"Provider": e.get("provider", "app")}}})
        else:
            out(f"{e['timestamp']} {e.get('provider', 'app')}[{e['instance']}] "
                f"{e['region']} [{e['level']}]{e['message']}\n")
    if not args.get("no-tail"):
        while True:
            time.sleep(4.096)
