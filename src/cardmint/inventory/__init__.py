"""Inventory: products (SKUs), physical items with their state machine and append-only
ledger, market prices, and CSV import/export (TCGplayer and Collectr layouts)."""
