"""The runbook's daily checks: `health`, `stats`, `test-card` (issue #4 fills them in)."""

from __future__ import annotations

import typer

from cardmint.cli.common import JsonOpt
from cardmint.errors import UsageError

NOT_YET = "`cardmint {name}` is not available yet (it arrives with the monitoring work, issue #4)"


def register(app: typer.Typer) -> None:
    @app.command()
    def health(as_json: JsonOpt = False) -> None:
        """The runbook's health check."""
        raise UsageError(NOT_YET.format(name="health"))

    @app.command()
    def stats(as_json: JsonOpt = False) -> None:
        """Latency, throughput, connections, slow queries."""
        raise UsageError(NOT_YET.format(name="stats"))

    @app.command(name="test-card")
    def test_card(as_json: JsonOpt = False) -> None:
        """Verify the schema after a deploy."""
        raise UsageError(NOT_YET.format(name="test-card"))
