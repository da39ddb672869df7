"""The application load test's operations: what a client of CardMint does, drawn from the
catalog the API serves.

Catalog search (words of card names, a name within a set, HP ranges, typos), card lookup,
identification from OCR-like readings (confusable characters, a dropped letter, the number
as printed), and where the API serves them, capture intake and inventory updates. An
operation whose route the API does not serve is skipped, with the reason.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from cardmint.errors import UsageError
from cardmint.ops.loadtest.loadgen import Operation, Request

DEFAULT_MIX = "search=40,lookup=30,identify=20,capture=5,inventory=5"
# operation -> (method, OpenAPI path) it needs
ROUTES = {
    "search": ("get", "/v1/cards"),
    "lookup": ("get", "/v1/cards/{card_id}"),
    "identify": ("post", "/v1/identify"),
    "capture": ("post", "/v1/captures"),
    "inventory": ("patch", "/v1/inventory/items/{item_id}"),
}
WRITES = ("capture", "inventory")
SAMPLE_PAGES = 4  # pages of 250 cards drawn at random: about 1,000 cards
CONFUSE = str.maketrans({"o": "0", "O": "0", "l": "1", "I": "1", "s": "5", "S": "5"})


def parse_mix(text: str) -> dict[str, float]:
    """`search=40,lookup=30` -> weights; unknown names and negative weights are refused."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in ROUTES:
            raise UsageError(f"--mix: unknown operation {name!r}; known: {', '.join(ROUTES)}")
        try:
            weight = float(value) if value else 1.0
        except ValueError:
            raise UsageError(f"--mix: {part!r} is not name=weight") from None
        if weight < 0:
            raise UsageError(f"--mix: {name} has a negative weight")
        if weight:
            weights[name] = weight
    if not weights:
        raise UsageError("--mix names no operation")
    return weights


@dataclass(frozen=True)
class Card:
    id: str
    name: str
    number: str
    set_id: str
    printed_total: int | None
    hp: int | None


async def draw_cards(http: httpx.AsyncClient, rng: random.Random) -> list[Card]:
    """About a thousand cards from random pages of the catalog, through the API itself."""
    first = (await http.get("/v1/cards", params={"pageSize": "1"})).raise_for_status().json()
    pages = max(1, -(-first["totalCount"] // 250))
    cards: list[Card] = []
    for page in rng.sample(range(1, pages + 1), min(SAMPLE_PAGES, pages)):
        body = (await http.get("/v1/cards", params={"pageSize": "250", "page": str(page)})
                ).raise_for_status().json()
        cards.extend(Card(c["id"], c["name"], c["number"], c["set"]["id"],
                          c["set"]["printedTotal"], c["hp"]) for c in body["data"])
    if not cards:
        raise UsageError("the catalog is empty: run `cardmint catalog load` first")
    return cards


def _words(name: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z]{3,}", name)] or [name]


def search_request(cards: list[Card]) -> Any:
    def build(rng: random.Random) -> Request:
        card = rng.choice(cards)
        word = rng.choice(_words(card.name)).lower()
        kind = rng.random()
        if kind < 0.5:
            q = word
        elif kind < 0.7:
            q = f'name:"{card.name.replace(chr(34), "")}" set:{card.set_id}'
        elif kind < 0.85 and card.hp:
            q = f"{word} hp:>={card.hp}"
        else:  # a typo: one letter dropped
            i = rng.randrange(len(word))
            q = word[:i] + word[i + 1:] if len(word) > 4 else word
        return Request("GET", "/v1/cards", params={"q": q, "pageSize": "20"})
    return build


def lookup_request(cards: list[Card]) -> Any:
    def build(rng: random.Random) -> Request:
        return Request("GET", f"/v1/cards/{rng.choice(cards).id}")
    return build


def ocr_reading(card: Card, rng: random.Random) -> dict[str, Any]:
    """What OCR might read off the card: a confusable or a dropped letter, the number as
    printed, HP (sometimes with O for 0)."""
    name = card.name
    if rng.random() < 0.3:
        name = name.translate(CONFUSE)
    elif rng.random() < 0.3 and len(name) > 4:
        i = rng.randrange(len(name))
        name = name[:i] + name[i + 1:]
    body: dict[str, Any] = {"name": name}
    body["number"] = f"{card.number}/{card.printed_total}" if card.printed_total else card.number
    if card.hp and rng.random() < 0.7:
        body["hp"] = str(card.hp).replace("0", "O") if rng.random() < 0.2 else card.hp
    return body


def identify_request(cards: list[Card]) -> Any:
    def build(rng: random.Random) -> Request:
        return Request("POST", "/v1/identify", json=ocr_reading(rng.choice(cards), rng))
    return build


def capture_request(cards: list[Card], schema: dict[str, Any], token: str) -> Any:
    """A capture as the request schema asks for it: an image reference, the OCR reading in
    whichever fields the schema has for it; only what the schema names is sent."""
    def build(rng: random.Random) -> Request:
        reading = ocr_reading(rng.choice(cards), rng)
        text = " ".join(str(v) for v in reading.values())
        hints = {**reading, "text": text, "ocr_text": text, "ocrText": text,
                 "image": f"loadtest://captures/{uuid.uuid4().hex}.jpg"}
        return Request("POST", "/v1/captures", json=fill(schema, hints),
                       headers={"Authorization": f"Bearer {token}"})
    return build


def fill(schema: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """An object for a (resolved) JSON schema: hinted properties, and required ones."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, prop in props.items():
        hint = next((v for k, v in hints.items() if k.lower() in key.lower()), None)
        if prop.get("type") == "object" and "properties" in prop:
            inner = fill(prop, hints)
            if inner:
                out[key] = inner
        elif hint is not None:
            out[key] = hint
        elif key in schema.get("required", ()):
            out[key] = "loadtest"
    return out


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Inline the `$ref`s of a request schema from the OpenAPI document's components."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return resolve(spec, spec.get("components", {}).get("schemas", {}).get(name, {}))
    if "properties" in schema:
        return {**schema, "properties": {k: resolve(spec, v)
                                          for k, v in schema["properties"].items()}}
    if "anyOf" in schema:  # Optional[X]: the non-null branch
        branch: dict[str, Any] = next(
            (s for s in schema["anyOf"] if s.get("type") != "null"), {})
        return resolve(spec, branch)
    return schema


def request_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    body = spec["paths"][path][method].get("requestBody", {})
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    return resolve(spec, schema)


@dataclass(frozen=True)
class InventoryItem:
    id: int
    version: int  # its ETag: what the next PATCH's If-Match must name


async def inventory_items(http: httpx.AsyncClient, token: str) -> list[InventoryItem]:
    """Up to 200 items in stock, oldest first. The list is `/v1/inventory/items` and, as
    every inventory read, needs a token (read scope; the run's write token has it)."""
    response = await http.get("/v1/inventory/items",
                              params={"pageSize": "200", "status": "IN_STOCK"},
                              headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        raise UsageError(f"GET /v1/inventory/items answered {response.status_code}")
    return [InventoryItem(int(item["id"]), int(item["version"]))
            for item in response.json()["data"]]


class ItemMover:
    """Inventory updates as a clerk makes them: move an item to another location, naming
    the version it was read at (the API refuses `If-Match: *`).

    The builder round-robins over the items, skipping those with a request in flight, and
    takes each item's next version from the ETag of its answer, so concurrent clients do
    not make each other's versions stale. An item whose update failed leaves the rotation
    (its version is unknown); only when every item is in flight is one sent twice, and a
    412 then is a real conflict.
    """

    def __init__(self, items: list[InventoryItem], token: str) -> None:
        if not items:
            raise ValueError("no inventory items to update")
        self.versions = {item.id: item.version for item in items}
        self.order = [item.id for item in items]
        self.token = token
        self.busy: set[int] = set()
        self.turn = itertools.count()
        self.moves = itertools.count()

    def build(self, rng: random.Random) -> Request:
        count = len(self.order)
        item = self.order[next(self.turn) % count]
        for _ in range(count - 1):
            if item not in self.busy:
                break
            item = self.order[next(self.turn) % count]
        self.busy.add(item)
        return Request("PATCH", f"/v1/inventory/items/{item}",
                       json={"location": f"loadtest-{next(self.moves) % 50}"},
                       headers={"Authorization": f"Bearer {self.token}",
                                "If-Match": f'"{self.versions[item]}"'})

    def answered(self, request: Request, response: httpx.Response | None) -> None:
        item = int(request.path.rsplit("/", 1)[1])
        self.busy.discard(item)
        etag = response.headers.get("etag") if response is not None else None
        if response is not None and response.status_code == 200 and etag:
            self.versions[item] = int(etag.strip('"'))
        elif item in self.order and len(self.order) > 1:
            self.order.remove(item)


async def openapi(http: httpx.AsyncClient) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The API's OpenAPI document and the (method, path) pairs it serves."""
    spec = (await http.get("/openapi.json")).raise_for_status().json()
    return spec, {(m.lower(), p) for p, methods in spec.get("paths", {}).items()
                  for m in methods}


def writes_served(weights: dict[str, float], served: set[tuple[str, str]]) -> bool:
    return any(ROUTES[name] in served for name in weights if name in WRITES)


async def operations(http: httpx.AsyncClient, weights: dict[str, float], rng: random.Random,
                     token: str | None, spec: dict[str, Any], served: set[tuple[str, str]]
                     ) -> tuple[list[Operation], dict[str, str], int]:
    """The operations to run (with their weights), those skipped and why, and the number
    of cards drawn."""
    cards = await draw_cards(http, rng)
    ops: list[Operation] = []
    skipped: dict[str, str] = {}
    for name, weight in weights.items():
        method, path = ROUTES[name]
        if (method, path) not in served:
            skipped[name] = f"{method.upper()} {path} is not served by this API"
            continue
        if name in WRITES and token is None:
            skipped[name] = "needs a write token, and none could be made"
            continue
        answered = None
        if name == "search":
            build = search_request(cards)
        elif name == "lookup":
            build = lookup_request(cards)
        elif name == "identify":
            build = identify_request(cards)
        elif name == "capture":
            build = capture_request(cards, request_schema(spec, method, path), token or "")
        else:
            try:
                items = await inventory_items(http, token or "")
            except UsageError as exc:
                skipped[name] = str(exc)
                continue
            if not items:
                skipped[name] = "no inventory items in stock to update"
                continue
            mover = ItemMover(items, token or "")
            build, answered = mover.build, mover.answered
        ops.append(Operation(name, weight, build, answered=answered))
    return ops, skipped, len(cards)
