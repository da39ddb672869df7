import pytest

from cardmint.dsn import redact, username, with_password, with_user


@pytest.mark.parametrize("text, expected", [
    ("postgresql://app:s3cr%40t@h:5432/db", "postgresql://app:***@h:5432/db"),
    ("postgres://u:p@h1:1,h2:2/db?target_session_attrs=read-write",
     "postgres://u:***@h1:1,h2:2/db?target_session_attrs=read-write"),
    ("postgresql://u@h/db?password=abc&sslmode=require",
     "postgresql://u@h/db?password=***&sslmode=require"),
    ("host=h user=u password=abc dbname=d", "host=h user=u password=*** dbname=d"),
    ("host=h password='a b\\'c' dbname=d", "host=h password=*** dbname=d"),
    ("connect to postgresql://u:pw@h/db failed", "connect to postgresql://u:***@h/db failed"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_with_password_and_username() -> None:
    dsn = with_password("postgresql://cardmint_app@127.0.0.1:1,127.0.0.1:2/cardmint", "a/b@c")
    assert dsn == "postgresql://cardmint_app:a%2Fb%40c@127.0.0.1:1,127.0.0.1:2/cardmint"
    assert username(dsn) == "cardmint_app"
    assert username("postgresql://h/db") is None
    with pytest.raises(ValueError):
        with_password("postgresql://h/db", "x")


def test_with_user_keeps_hosts_and_database_and_drops_the_password() -> None:
    dsn = "postgresql://postgres:s3cret@10.0.0.1:5432,10.0.0.2:5432/cardmint?sslmode=require"
    assert with_user(dsn, "app@x") == (
        "postgresql://app%40x@10.0.0.1:5432,10.0.0.2:5432/cardmint?sslmode=require")
    assert with_user("postgresql://h:1/db", "ro") == "postgresql://ro@h:1/db"
