"""Secrets for `flyctl secrets import`, which reads NAME=VALUE lines on stdin (never argv).

flyctl's parser (internal/command/secrets/parser.go) takes an unquoted `#` as the start
of a comment, cutting the value there, trims a leading space, and takes one pair of
surrounding quotes off. So every value is sent inside double quotes (a `#` inside an
open quote is kept), and values it could not carry faithfully are refused: a double
quote (it would close the quote early), a line break, a NUL.
"""

from __future__ import annotations

import re

from cardmint.errors import UsageError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def import_line(key: str, value: str) -> str:
    """`KEY="VALUE"` and a newline, as flyctl's parser reads back exactly VALUE."""
    if not _KEY.match(key):
        raise UsageError(f"secret name {key!r} must be letters, digits and underscores")
    if not value or any(c in value for c in '"\n\r\0'):
        raise UsageError(f"secret {key} must be one non-empty line without a double quote "
                         "(flyctl's import cannot carry it intact)")
    return f'{key}="{value}"\n'
