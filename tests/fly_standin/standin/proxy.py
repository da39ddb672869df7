"""`proxy LOCAL:REMOTE [HOST] -a APP`: internal/command/proxy/proxy.go and proxy/connect.go.
Binds LOCAL on 127.0.0.1 (0 picks a free port), prints `Proxying localhost:PORT to remote
[HOST]:REMOTE` (HOST defaults to APP.internal) and relays until killed, or, with
--watch-stdin, until its stdin closes. Here the far end is the app's `backend` in the
world: a real PostgreSQL on this machine standing in for the app's."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Any

from standin.world import Exit, app_of, edit, out


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(client: socket.socket, backend: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(backend, timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
    _pipe(upstream, client)


def proxy(args: Any) -> None:
    if not args.words:
        raise Exit("requires at least 1 arg(s), only received 0")
    local, _, remote = args.words[0].partition(":")
    remote = remote or local
    name = args.app(required=False)
    if name is None:
        raise Exit("org slug must be specified when not running interactively")
    host = args.words[1] if len(args.words) > 1 else f"{name}.internal"
    with edit() as w:
        backend = app_of(w, name).get("backend")
    if not backend:
        raise Exit(f"{host}: no such host")
    back_host, _, back_port = str(backend).rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.get("bind-addr", "127.0.0.1"), int(local)))
    listener.listen(16)
    out(f"Proxying localhost:{listener.getsockname()[1]} to remote [{host}]:{remote}\n")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.get("watch-stdin"):
        def watch() -> None:
            while sys.stdin.buffer.read(1):
                pass
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, (back_host, int(back_port))),
                         daemon=True).start()
