"""`python -m cardmint` is the `cardmint` command."""

from cardmint.cli.main import run

run()
