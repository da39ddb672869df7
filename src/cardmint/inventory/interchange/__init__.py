"""Interchange with the tools sellers and collectors use: TCGplayer (the seller pricing
export and the app's collection export), Collectr and Dragon Shield files read into one
row model (`layouts`), matched to the catalog strongest key first (`matching`), applied
in `add` or `sync` mode or only previewed (`importer`), and written back out (`exports`)."""
