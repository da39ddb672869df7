"""`cardmint serve`: the HTTP API on loopback."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from cardmint.cli.common import HomeOpt, settings
from cardmint.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Annotated[str | None, typer.Option(help="Loopback address to bind.")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
        home: HomeOpt = None,
        worker: Annotated[bool, typer.Option(help="Run one intake worker in-process.")] = True,
        monitor: Annotated[bool, typer.Option(
            help="Run the monitor loop in-process (samples, alerts, the daily backup), "
                 "unless another monitor already leads.")] = True,
        sync_guard: Annotated[bool, typer.Option(
            help="On a local --sync cluster, run the sync guard in-process (one acts "
                 "cluster-wide).")] = True,
        workers: Annotated[int, typer.Option(
            min=1, max=64, help="Server processes sharing the port (the background loops "
                                "run in one of them only).")] = 1,
        fd: Annotated[int | None, typer.Option(
            hidden=True, help="Accept on this inherited socket (a worker process).")] = None,
        access_log: Annotated[bool, typer.Option(
            help="Log each request (method, path, status) to stderr.")] = True,
    ) -> None:
        """Serve the HTTP API (uvicorn on uvloop) until Ctrl-C."""
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG

        from cardmint.api.app import create_app
        from cardmint.db.outage_log import serve_log_config

        s = settings(home)
        host = host or s.api_host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise UsageError(f"--host {host} is not a loopback address; CardMint serves on "
                             "loopback only (put a proxy in front for remote clients)")
        if workers > 1 and fd is None:
            from cardmint.api.workers import supervise

            background = [f"--{'' if on else 'no-'}{name}" for name, on in
                          (("worker", worker), ("monitor", monitor), ("sync-guard", sync_guard))]
            common = ["--access-log" if access_log else "--no-access-log"]
            raise typer.Exit(supervise(host, port or s.api_port, workers, s.home, background,
                                       common))
        api = create_app(s)
        if worker:  # intake jobs are processed by this process too (`--no-worker`: not)
            from cardmint.api.intake import run_worker_in

            run_worker_in(api)
        if monitor:
            from cardmint.api.background import run_monitor_in

            run_monitor_in(api)
        if sync_guard:
            from cardmint.api.background import run_sync_guard_in

            run_sync_guard_in(api)
        # proxy_headers off: uvicorn would believe X-Forwarded-* from loopback, i.e. from
        # anyone here; the app believes them only from CARDMINT_TRUSTED_PROXIES
        config = uvicorn.Config(api, host=host, port=port or s.api_port, loop="uvloop",
                                http="httptools", log_level="info", access_log=access_log,
                                log_config=serve_log_config(LOGGING_CONFIG),
                                proxy_headers=False, server_header=False)
        server = uvicorn.Server(config)
        from cardmint.api import gctune

        gctune.for_serving()  # p99 of a card lookup 46 -> 7 ms (garbage collection pauses)
        if fd is None:
            server.run()
        else:
            # A worker process accepts on the supervisor's socket. Not uvicorn's own fd=:
            # it takes every fd for a Unix socket, so TCP_NODELAY is never set and each
            # answer waits on a delayed ACK (~40 ms).
            import socket

            server.run(sockets=[socket.socket(fileno=fd)])
        if not server.started:  # as uvicorn.run: could not bind or start up
            raise typer.Exit(3)
