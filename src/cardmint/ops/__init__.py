"""The runbook's procedures, a package per chapter: health, monitor, incidents, backups,
security, drills, loadtest, storage; and maintenance windows, freeze, scaling and the
sync guard. Each is a function the CLI, the API and the pages render; none prints. Where
a step differs by engine, the chapter's `__init__` chooses the variant."""
