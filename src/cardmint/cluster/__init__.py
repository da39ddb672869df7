"""The engines that run the cluster's PostgreSQL nodes, behind one protocol (engine.py):
`local` (servers on this machine), `patroni` (the same servers run by Patroni) and `fly`
(a Fly Postgres app through flyctl), chosen by `provider.open_cluster`. What the engines
that run PostgreSQL themselves share is in `pg/`, `home.py` and `handover.py`; the state
file is `state.py`'s alone.
"""
