"""The Patroni engine: the same servers run by Patroni, which fails over by itself."""

from cardmint.cluster.patroni.engine import PatroniCluster

__all__ = ["PatroniCluster"]
