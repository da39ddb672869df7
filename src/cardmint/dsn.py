"""Small helpers for PostgreSQL connection strings: redact, add a password, read the user.

Every DSN that may reach a log, an exception message or a terminal goes through `redact`.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_MASK = "***"
# key=value conninfo: password=secret or password='se cret'
_KV_PASSWORD = re.compile(r"((?<![?&])\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# URL userinfo: scheme://user:secret@host
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
# query parameter: ?password=secret
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&\s]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask every password in `text`, which may be a DSN or a message that contains one."""
    text = _URL_PASSWORD.sub(rf"\1{_MASK}\3", text)
    text = _QUERY_PASSWORD.sub(rf"\1{_MASK}", text)
    return _KV_PASSWORD.sub(rf"\1{_MASK}", text)


def username(dsn: str) -> str | None:
    """The user named in a postgresql:// URL, if any."""
    netloc = urlsplit(dsn).netloc
    if "@" not in netloc:
        return None
    user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
    return unquote(user) or None


def password_of(dsn: str) -> str | None:
    """The password in a postgresql:// URL, if any."""
    netloc = urlsplit(dsn).netloc
    if "@" not in netloc:
        return None
    userinfo = netloc.rsplit("@", 1)[0]
    return unquote(userinfo.split(":", 1)[1]) if ":" in userinfo else None


def with_password(dsn: str, password: str) -> str:
    """Return the URL with `password` set for its user (replacing any password it had)."""
    parts = urlsplit(dsn)
    if "@" not in parts.netloc:
        raise ValueError("DSN names no user to set a password for")
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:{quote(password, safe='')}@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_user(dsn: str, user: str) -> str:
    """Return the URL for `user` on the same hosts and database, without a password."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{quote(user, safe='')}@{hosts}", parts.path,
                       parts.query, parts.fragment))
