"""The database layer: connection pools (db/connpool.py) with routing and latency
recording, the schema and its migrations. asyncpg's errors become CardMint's here and
nowhere else."""

from cardmint.db.latency import LatencyHistogram
from cardmint.db.pool import Database, PooledConnection, Record, Row, Transaction, one

__all__ = [
    "Database", "LatencyHistogram", "PooledConnection", "Record", "Row", "Transaction", "one",
]
