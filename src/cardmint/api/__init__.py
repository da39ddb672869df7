"""The HTTP API (FastAPI): thin over the catalog, intake, inventory and ops layers."""
