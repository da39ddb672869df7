"""Intake: captures of scanned cards, the PostgreSQL job queue that processes them, the
worker that identifies, prices and stocks each card (or sends it to review), and the
operator's resolution of what went to review."""
