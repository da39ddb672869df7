"""What every engine that runs PostgreSQL itself shares: its binaries, processes, data
directories, roles, TLS, logs, and superuser work on one node."""
