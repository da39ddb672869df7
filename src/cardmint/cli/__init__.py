"""The `cardmint` command: thin typer commands over the layers below."""
