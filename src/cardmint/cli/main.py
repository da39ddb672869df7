"""Entry point: builds the command tree and turns CardMint's errors into exit codes."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from cardmint.cli import (
    backup,
    catalog,
    cluster,
    cluster_logs,
    cluster_scale,
    db,
    drill,
    incident,
    inventory,
    lab,
    loadtest,
    maintenance,
    monitor,
    ops,
    pooler,
    scan,
    security,
    serve,
    storage,
    token,
    worker,
)
from cardmint.cli.output import CRITICAL, UNAVAILABLE, errors, to_json
from cardmint.dsn import redact
from cardmint.errors import (
    CardmintError,
    ConfigError,
    DatabaseUnavailable,
    UsageError,
    ValidationError,
)

app = typer.Typer(
    name="cardmint",
    help="CardMint: Pokémon card inventory on PostgreSQL, and its database runbook as commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cluster_scale.register(cluster.app)
cluster_logs.register(cluster.app)
app.add_typer(cluster.app, name="cluster")
app.add_typer(db.app, name="db")
app.add_typer(catalog.app, name="catalog")
app.add_typer(backup.app, name="backup")
app.add_typer(storage.app, name="storage")
app.add_typer(security.app, name="security")
app.add_typer(token.app, name="token")
app.add_typer(maintenance.app, name="maintenance")
app.add_typer(incident.app, name="incident")
app.add_typer(inventory.app, name="inventory")
app.add_typer(drill.app, name="drill")
app.add_typer(loadtest.app, name="loadtest")
app.add_typer(pooler.app, name="pooler")
app.add_typer(lab.app, name="lab")
serve.register(app)
ops.register(app)
monitor.register(app)
worker.register(app)
scan.register(app)


def exit_code(exc: CardmintError) -> int:
    """3 for what the caller asked wrong or what cannot be reached now; 2 for failures."""
    if isinstance(exc, UsageError | ConfigError | ValidationError | DatabaseUnavailable):
        return UNAVAILABLE
    return CRITICAL


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of
        # calling sys.exit, and lets every other exception reach us.
        result = app(args=args, prog_name="cardmint", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        errors.print("aborted")
        return UNAVAILABLE
    except typer.TyperException as exc:  # a bad option or a missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            errors.print(f"error: {exc}", markup=False)
        return UNAVAILABLE
    except CardmintError as exc:
        message = redact(str(exc))
        if "--json" in args:
            sys.stdout.write(to_json({"ok": False, "error": message,
                                      "kind": type(exc).__name__}) + "\n")
        errors.print(Text.assemble(("error: ", "bold red"), message))
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
