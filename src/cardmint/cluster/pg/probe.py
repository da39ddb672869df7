"""What one node says about itself: the query both `cluster status` and health ask."""

from __future__ import annotations

NODE_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       inet_server_port() AS port,
       current_setting('data_directory') AS data_directory,
       current_setting('max_connections')::int AS max_connections,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
            ELSE pg_current_wal_lsn() END::text AS lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS lag_s,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                          pg_last_wal_replay_lsn()), 0)
            ELSE 0 END::bigint AS replay_lag_bytes,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline,
       current_setting('default_transaction_read_only') = 'on' AS read_only
"""


def parse_lsn(lsn: str | None) -> int | None:
    """'16/B374D848' as a byte position."""
    if not lsn:
        return None
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)
