"""The runbook's incident response: severity levels and their deadlines (severity.py),
an incident's life from open to close with its events (lifecycle.py), and the
post-incident review (report.py)."""
