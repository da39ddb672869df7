"""`cardmint token ...`: API tokens (shown once at creation, stored hashed)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cardmint import tokens
from cardmint.cli.common import HomeOpt, JsonOpt, run, with_database
from cardmint.cli.output import console, emit

app = typer.Typer(help="API tokens.", no_args_is_help=True)


@app.command()
def create(
    owner: Annotated[str, typer.Option(help="Who acts with it (the ledger records this).")],
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed this once and never again."""
    token, record = run(with_database(home, lambda db: tokens.create_token(db, owner=owner,
                                                                       scope=scope)))
    emit({"ok": True, "token": token, **record}, as_json, lambda d: console.print(
        f"token {d['id']} for {d['owner']} ({d['scope']}): [bold]{d['token']}[/]\n"
        "store it now: it is not shown again"))


@app.command(name="list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Include revoked.")] = False,
          home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Tokens (never their secret part)."""
    rows = run(with_database(home, lambda db: tokens.list_tokens(db, include_revoked=all_)))

    def render(data: list[dict[str, Any]]) -> None:
        table = Table(title="API tokens")
        for col in ("id", "owner", "scope", "prefix", "created", "last used", "revoked"):
            table.add_column(col)
        for r in data:
            table.add_row(str(r["id"]), r["owner"], r["scope"], r["prefix"] + "…",
                          str(r["created_at"])[:19], str(r["last_used_at"] or "")[:19],
                          str(r["revoked_at"] or "")[:19])
        console.print(table)

    emit(rows, as_json, render)


@app.command()
def revoke(token_id: Annotated[int, typer.Argument(help="The token's id.")],
           home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a token at once."""
    run(with_database(home, lambda db: tokens.revoke_token(db, token_id)))
    emit({"ok": True, "revoked": token_id}, as_json,
         lambda d: console.print(f"token {d['revoked']} revoked"))
