"""The Fly engine: a Fly Postgres app driven through flyctl."""

from cardmint.cluster.fly.engine import FlyCluster

__all__ = ["FlyCluster"]
