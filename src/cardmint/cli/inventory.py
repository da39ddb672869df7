"""`cardmint inventory import|export|template`: files in the layouts of TCGplayer, Collectr
and Dragon Shield, through the same functions as the API. The ledger records `--actor`."""

from __future__ import annotations

import getpass
import io
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cardmint.cli.common import HomeOpt, JsonOpt, run, with_database
from cardmint.cli.output import CRITICAL, OK, WARN, console, emit
from cardmint.db import Database
from cardmint.errors import UsageError
from cardmint.intake import imports
from cardmint.inventory.interchange import exports, importer, layouts
from cardmint.inventory.items import Filters

COLLECTR_COLUMNS = ", ".join(layouts.COLLECTR).replace("{date}", "YYYY-MM-DD")
FORMATS_HELP = f"""
Formats (chosen by the file's header; --format only to insist):

\b
  tcgplayer      {layouts.TITLES['tcgplayer']}: {', '.join(layouts.TCGPLAYER)}
                 (store accounts: + My Store Reserve Quantity, My Store Price)
  tcgplayer-app  {layouts.TITLES['tcgplayer-app']}: {', '.join(layouts.TCGPLAYER_APP)}
                 (or the short {len(layouts.TCGPLAYER_APP_SHORT)} columns, no External ID/Price)
  collectr       {layouts.TITLES['collectr']}: {COLLECTR_COLUMNS}
  dragonshield   {layouts.TITLES['dragonshield']}: a "sep=," line, then
                 {', '.join(layouts.DRAGON_SHIELD)}

`cardmint inventory template --format F` writes an empty file in a layout.
"""

app = typer.Typer(help="Inventory files: import, export, templates.", no_args_is_help=True)
ExportFormat = Annotated[str, typer.Option("--format",
                                           help="tcgplayer, collectr or dragonshield.")]


def _check(value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise UsageError(f"--format must be one of {', '.join(allowed)}")
    return value


class _Counting(io.RawIOBase):
    """The file's bytes, counted as read: the progress bar's position."""

    def __init__(self, raw: BinaryIO, seen: Callable[[int], None]) -> None:
        self.raw, self.seen = raw, seen

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.seen(n or 0)
        return n or 0


@app.command(name="import", epilog=FORMATS_HELP)
def import_(
    file: Annotated[Path, typer.Argument(help="The file (CSV, UTF-8).")],
    fmt: Annotated[str | None, typer.Option("--format", help="tcgplayer, tcgplayer-app, "
                                            "collectr or dragonshield (default: by header).")
                   ] = None,
    mode: Annotated[str, typer.Option(help="add: every row adds its copies; sync: the file "
                                      "states the counts (twice changes nothing).")] = "add",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say per row what would "
                                          "happen; change nothing.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="sync: remove the items the file "
                                        "does not name (else only reported).")] = False,
    review: Annotated[bool, typer.Option("--review", help="Send unmatched rows to the "
                                         "review queue.")] = False,
    location: Annotated[str | None, typer.Option(help="Put every item here (and sync only "
                                                 "here).")] = None,
    actor: Annotated[str | None, typer.Option(help="Who the ledger records.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a TCGplayer, Collectr or Dragon Shield file: every row matched (card,
    printing, action) or reported with its reason. Exit 0 all matched, 1 some rows not,
    2 none, 3 a file that is not one of the layouts."""
    _check(fmt, layouts.FORMATS)
    if mode not in importer.MODES:
        raise UsageError("--mode must be add or sync")
    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    who = actor or f"cli:{getpass.getuser()}"
    size = file.stat().st_size

    async def work(db: Database, bar: Callable[[int], None]) -> Any:
        with file.open("rb") as raw:
            text = io.TextIOWrapper(io.BufferedReader(_Counting(raw, bar)),
                                    encoding="utf-8-sig", newline="")
            async with db.transaction() as tx:
                report = await importer.run(tx, layouts.Reader(text, fmt, location),
                                            mode=mode, actor=who, dry_run=dry_run,
                                            prune=prune, review=review,
                                            scope_location=location)
                captures = {}
                if review and not dry_run:
                    captures = await imports.send_to_review(tx, report, report.review,
                                                            submitter=who)
            return report, captures

    if as_json or not console.is_terminal:
        report, captures = run(with_database(home, lambda db: work(db, lambda n: None)))
    else:
        columns = (TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"reading {file.name}", total=size or None)
            report, captures = run(with_database(
                home, lambda db: work(db, lambda n: progress.advance(task, n))))
    data = {k: v for k, v in asdict(report).items() if k != "review"}
    for r in data["results"]:
        r["capture_id"] = captures.get(r["line"])

    def render(d: dict[str, Any]) -> None:
        did = "would " if d["dry_run"] else ""
        console.print(f"{layouts.TITLES[d['format']]} ({d['mode']}{', dry run' if did else ''})"
                      f": {d['rows']} rows, {d['matched']} matched, {d['skipped']} skipped, "
                      f"{d['unmatched']} unmatched, {d['errors']} unreadable")
        console.print(f"items: {did}add {d['items_added']}, {did}remove "
                      f"{d['items_removed']}, unchanged {d['items_unchanged']}")
        for r in d["results"]:
            if r["status"] == "matched":
                if d["dry_run"]:
                    console.print(f"line {r['line']}: {r['card_name']} ({r['card_id']}) "
                                  f"{r['printing']} {r['condition']}: {r['action']}",
                                  markup=False)
                continue
            sent = f" (review capture {r['capture_id']})" if r["capture_id"] else ""
            column = f" [{r['field']}]" if r["field"] else ""
            console.print(f"line {r['line']}: {r['status']}{column}: {r['reason']}{sent}",
                          markup=False)
        if d["missing_items"]:
            verb = "removed" if d["pruned"] else "not in the file (kept; --prune removes)"
            console.print(f"{d['missing_items']} items in stock {verb}:")
            for m in d["missing"][:50]:
                console.print(f"  {m['quantity']} × {m['card_name']} ({m['card_id']}) "
                              f"{m['printing']} {m['condition']} at {m['location']}",
                              markup=False)
        if d["results_truncated"]:
            console.print("(per-row lines after the first 10,000 left out; counts cover all)")

    emit(data, as_json, render)
    if report.problems:
        raise typer.Exit(WARN if report.matched else CRITICAL)
    raise typer.Exit(OK)


@app.command(epilog=FORMATS_HELP)
def export(
    fmt: ExportFormat = "tcgplayer",
    location: Annotated[str | None, typer.Option(help="Only items here.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here, not stdout.")] = None,
    home: HomeOpt = None,
) -> None:
    """The items in stock as a TCGplayer upload file, a Collectr or a Dragon Shield file."""
    _check(fmt, exports.EXPORT_FORMATS)

    async def work(db: Database) -> list[str]:
        return list(await exports.export(db, fmt, Filters(location=location)))

    chunks = run(with_database(home, work))
    if output is None:
        for chunk in chunks:
            typer.echo(chunk, nl=False)
    else:
        with output.open("w", encoding="utf-8", newline="") as out:  # CSV's CRLF as is
            out.writelines(chunks)


@app.command(epilog=FORMATS_HELP)
def template(
    fmt: Annotated[str, typer.Option("--format", help="tcgplayer, tcgplayer-app, collectr "
                                     "or dragonshield.")],
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here, not stdout.")] = None,
) -> None:
    """An empty file in a layout (its header row), to fill in and import."""
    _check(fmt, layouts.FORMATS)
    text = exports.template(fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8", newline="")
