"""`cardmint scan DIR`: a folder of card photos into the inventory, with a progress bar.

Each photo is queued once (a file sent before, recognised by its digest, is skipped, so an
interrupted run is resumed by running it again), then read and identified here by an
intake worker until every capture is stocked, in review or failed (`--no-process` only
queues them, for a `cardmint serve` or `cardmint worker` elsewhere). Exit 0; 1 when some
file was refused or some capture failed; 3 when the folder or the database is not there.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cardmint.cli.common import HomeOpt, JsonOpt, run, settings
from cardmint.cli.output import OK, WARN, console, emit, errors
from cardmint.config import Settings
from cardmint.db import Database
from cardmint.intake import batch
from cardmint.intake.captures import check_item_fields


async def _scan(s: Settings, folder: Path, *, recursive: bool, condition: str, language: str,
                location: str | None, process: bool, timeout: float,
                show: bool) -> dict[str, Any]:
    files = batch.photo_files(folder, recursive=recursive)
    progress = Progress(TextColumn("{task.description:<16}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=errors,
                        disable=not show)
    async with Database(s.model_copy(update={"pool_min": 1, "pool_max": 4})) as db:
        with progress:
            sending = progress.add_task("Sending photos", total=len(files))
            report = await batch.send(
                db, folder, files, settings=s, submitter=f"scan:{getpass.getuser()}",
                condition=condition, language=language, location=location,
                step=lambda _: progress.advance(sending))
            if process:
                reading = progress.add_task("Reading cards", total=None)
                await batch.follow(db, report, timeout_s=timeout,
                                   step=lambda done, total: progress.update(
                                       reading, completed=done, total=total))
            else:
                report.captures = await batch.statuses(db, report.digests)
    return report.as_dict()


def _render(data: dict[str, Any]) -> None:
    counts = data["counts"]
    table = Table(title=f"{data['folder']}", show_header=False)
    for key, label in (("queued", "sent now"), ("skipped", "sent before (skipped)"),
                       ("refused", "refused"), ("processed", "identified and stocked"),
                       ("needs_review", "in the review queue"), ("failed", "failed"),
                       ("discarded", "discarded in review"),
                       ("pending", "still queued")):
        if counts.get(key):
            table.add_row(label, str(counts[key]))
    console.print(table)
    for f in data["files"]:
        if f["status"] == "refused":
            console.print(f"refused {f['name']}: {f['message']}", markup=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def scan(
        folder: Annotated[Path, typer.Argument(help="Folder of photos (.jpg, .png, .webp).")],
        condition: Annotated[str, typer.Option(help="Condition of every card.")] = "NM",
        language: Annotated[str, typer.Option(help="Language of every card.")] = "en",
        location: Annotated[str | None, typer.Option(help="Where the cards are kept.")]
        = None,
        recursive: Annotated[bool, typer.Option("--recursive", help="Include subfolders.")]
        = False,
        process: Annotated[bool, typer.Option(
            "--process/--no-process", help="Read and identify here (default), or only "
                                           "queue for the workers.")] = True,
        timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for the "
                                                             "captures to be read.")] = 3600.0,
        as_json: JsonOpt = False,
        home: HomeOpt = None,
    ) -> None:
        """Import a folder of card photos: queue each, read and identify it, stock it or
        send it to review. Run it again to resume."""
        check_item_fields(condition, language)
        data = run(_scan(settings(home), folder, recursive=recursive, condition=condition,
                         language=language, location=location, process=process,
                         timeout=timeout, show=not as_json))
        emit(data, as_json, _render)
        counts = data["counts"]
        raise typer.Exit(WARN if counts.get("refused") or counts.get("failed") else OK)
