"""The schema's conventions, checked on the declaration itself (no database needed)."""

from __future__ import annotations

import sqlalchemy as sa

from cardmint.db.schema import metadata

MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names silently


def _constraint_names() -> list[str]:
    names = []
    for table in metadata.tables.values():
        names += [str(c.name) for c in table.constraints]
        names += [str(i.name) for i in table.indexes]
    return names


def test_every_constraint_and_index_has_a_stable_readable_name() -> None:
    names = _constraint_names()
    assert all(name and name != "None" for name in names)
    assert all(len(name) <= MAX_IDENTIFIER for name in names), [
        n for n in names if len(n) > MAX_IDENTIFIER]
    assert len(names) == len(set(names))
    prefixes = ("pk_", "fk_", "uq_", "ck_", "ix_")
    assert all(name.startswith(prefixes) for name in names)


def test_money_is_integer_cents_and_time_has_a_zone() -> None:
    for table in metadata.tables.values():
        assert table.comment, f"{table.name} has no comment"
        for column in table.columns:
            if column.name.endswith("_cents"):
                assert isinstance(column.type, sa.BigInteger), column
            if isinstance(column.type, sa.DateTime):
                assert column.type.timezone, column
