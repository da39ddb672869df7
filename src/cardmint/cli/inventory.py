"""`cardmint inventory import|export`: CSV in the TCGplayer or Collectr layout, through
the same functions as the API. The ledger records `--actor` for imported items."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from cardmint.cli.common import HomeOpt, JsonOpt, run, with_database
from cardmint.cli.output import CRITICAL, OK, WARN, console, emit
from cardmint.db import Database
from cardmint.errors import UsageError
from cardmint.inventory import csvio
from cardmint.inventory.items import Filters

app = typer.Typer(help="Inventory CSV import and export.", no_args_is_help=True)
FormatOpt = Annotated[str, typer.Option("--format", help="tcgplayer or collectr.")]
MAX_FILE_BYTES = 10_000_000


def _format(value: str) -> str:
    if value not in csvio.FORMATS:
        raise UsageError(f"--format must be one of {', '.join(csvio.FORMATS)}")
    return value


@app.command(name="import")
def import_(
    file: Annotated[Path, typer.Argument(help="The CSV file.")],
    fmt: FormatOpt = "tcgplayer",
    location: Annotated[str | None, typer.Option(help="Put every item here.")] = None,
    actor: Annotated[str | None, typer.Option(help="Who the ledger records.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import the good rows in one transaction and list every bad one (exit 1 if there
    were some, 2 if no row could be imported)."""
    fmt = _format(fmt)
    if not file.is_file() or file.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(f"{file}: not a file of at most {MAX_FILE_BYTES} bytes")
    text = file.read_text(encoding="utf-8-sig")
    who = actor or f"cli:{getpass.getuser()}"

    async def work(db: Database) -> Any:
        async with db.transaction() as tx:
            return await csvio.import_csv(tx, text, fmt, actor=who, location=location)

    result = run(with_database(home, work))
    data = {"rows": result.rows, "imported_rows": result.imported_rows,
            "skipped_rows": result.skipped_rows, "items_created": result.items_created,
            "errors": result.errors}

    def render(d: dict[str, Any]) -> None:
        console.print(f"{d['imported_rows']} of {d['rows']} rows imported, "
                      f"{d['items_created']} items created")
        for e in d["errors"]:
            console.print(f"line {e['line']}: {e['field'] or ''} {e['message']}")

    emit(data, as_json, render)
    if result.errors:
        raise typer.Exit(WARN if result.imported_rows else CRITICAL)
    raise typer.Exit(OK)


@app.command()
def export(
    fmt: FormatOpt = "tcgplayer",
    location: Annotated[str | None, typer.Option(help="Only items here.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here, not stdout.")] = None,
    home: HomeOpt = None,
) -> None:
    """The items in stock as CSV."""
    fmt = _format(fmt)
    text = run(with_database(home, lambda db: csvio.export(db, fmt, Filters(location=location))))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8", newline="")  # CSV's CRLF as is
