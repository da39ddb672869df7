"""CardMint: Pokémon card inventory on PostgreSQL, with its database runbook as commands."""

__version__ = "0.1.0"
__all__ = ["__version__"]
