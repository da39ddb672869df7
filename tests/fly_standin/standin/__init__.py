"""The stand-in flyctl's pieces (see ../README.md): `cli` parses argv as flyctl's cobra
commands do and dispatches to `machines`, `postgres`, `volumes`, `secrets`, `logs` and
`proxy`; `world` holds the JSON world every invocation reads and changes."""
