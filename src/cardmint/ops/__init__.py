"""The runbook's procedures: health, stats, test-card, monitoring, alerts, maintenance
windows, incidents, backups, drills, security. Each is a function the CLI and the API
render; none of them prints."""
