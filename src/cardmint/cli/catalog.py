"""`cardmint catalog ...`: the bundled card catalog (TCGdex data, MIT)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cardmint.catalog.load import load_catalog
from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import console, emit
from cardmint.db.connect import connection

app = typer.Typer(help="The card catalog.", no_args_is_help=True)


@app.command()
def load(
    sample: Annotated[bool, typer.Option(help="Only base1, xy1 and sv10 (492 cards).")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load (or refresh) the catalog: idempotent, in one transaction."""
    s = settings(home)
    dsn = s.owner_dsn()

    async def go(progress: Progress | None) -> Any:
        tasks: dict[str, Any] = {}

        def step(stage: str, done: int, total: int) -> None:
            if progress is None:
                return
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total or None)
            progress.update(tasks[stage], completed=done, total=total or None)

        async with connection(dsn, s, application="cardmint-catalog") as conn:
            return await load_catalog(conn, sample=sample, progress=step)

    if as_json:
        report = run(go(None))
    else:
        columns = (TextColumn("{task.description:<10}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            report = run(go(progress))
    data = {"ok": True, **report.to_dict()}

    def render(d: dict[str, Any]) -> None:
        table = Table(title=f"catalog {'sample ' if d['sample'] else ''}loaded in "
                            f"{d['duration_s']:.2f} s")
        for col in ("table", "rows", "inserted", "updated", "deleted", "kept"):
            table.add_column(col, justify="right" if col != "table" else "left")
        for name in ("sets", "cards", "variants"):
            c = d["changes"].get(name, {})
            table.add_row(name, str(d[name]), *(str(c.get(k, 0)) for k in
                                                ("inserted", "updated", "deleted", "kept")))
        console.print(table)

    emit(data, as_json, render)
