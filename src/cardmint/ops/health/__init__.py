"""The runbook's performance checks: `health` (report.py: every check against its
thresholds, from facts read off each node), `stats` and `test-card`; the checks' shape and
levels (checks.py), replication slots and the pooler as checks."""
