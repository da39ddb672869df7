"""The local engine: PostgreSQL servers on this machine, failover by command."""

from cardmint.cluster.local.engine import LocalCluster

__all__ = ["LocalCluster"]
