"""Clusters: where the PostgreSQL nodes run and how to reach them.

`local` runs a primary and streaming replicas on this machine; later providers
(patroni, fly) implement the same operations.
"""
