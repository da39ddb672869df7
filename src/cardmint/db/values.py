"""The values the schema's CHECK constraints allow, in one place that costs nothing to
import: schema.py (SQLAlchemy, for alembic) declares them; run-time code validates
against the same tuples."""

CARD_CATEGORIES = ("Pokemon", "Trainer", "Energy")
CONDITIONS = ("NM", "LP", "MP", "HP", "DMG")
ITEM_STATUSES = ("IN_STOCK", "RESERVED", "SOLD", "REMOVED")
LEDGER_EVENTS = (
    "acquired", "reserved", "released", "sold", "returned", "removed", "moved", "adjusted",
)
CAPTURE_STATUSES = ("captured", "queued", "processing", "processed", "needs_review", "failed",
                    "discarded")
JOB_STATUSES = ("queued", "running", "succeeded", "failed")
SEVERITIES = ("P0", "P1", "P2")
TOKEN_SCOPES = ("read", "write", "admin")  # each includes the ones before it
