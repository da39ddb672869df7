"""The runbook's load tests: pgbench on a database of its own (pgbench.py) and the HTTP
API's mix (app.py, mix.py) driven by our generator (loadgen.py), held to wrk (wrk.py),
against a server started for the run (apiserver.py)."""
