"""A printing named in full, the same on every page, table and refusal."""

from __future__ import annotations

from cardmint.printings import name


def v(type_: str = "normal", subtype: str | None = None, size: str | None = None,
      foil: str | None = None, stamps: list[str] | None = None) -> dict[str, object]:
    return {"type": type_, "subtype": subtype, "size": size, "foil": foil,
            "stamps": stamps or []}


def test_every_part_is_named() -> None:
    assert name(v("holo", "shadowless", stamps=["1st-edition"])) == (
        "Holo · Shadowless · 1st Edition")
    assert name(v(size="jumbo")) == "Normal · Jumbo"
    assert name(v(stamps=["pikachu"], size="jumbo")) == "Normal · Pikachu stamp · Jumbo"
    assert name(v("reverse", foil="cosmos")) == "Reverse Holo · Cosmos foil"
    assert name(v(subtype="1999-2000-copyright")) == "Normal · 1999-2000 Copyright"
    assert name(v(subtype="no-e-reader")) == "Normal · No e-Reader"
    assert name(v(size="standard")) == "Normal"
