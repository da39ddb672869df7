"""The card catalog: loading the vendored TCGdex data, search and identification."""
