"""The application mix for wrk: the plan's proportions and encoding, the Lua string
escaper, and the generated script run by the real wrk against a small recording server
(bodies arrive byte for byte, each thread starts at its own offset, conditional updates
name the version their item is at)."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from cardmint.ops.loadtest import mix, wrk, wrkmix
from cardmint.ops.loadtest.loadgen import Operation, Request

needs_wrk = pytest.mark.skipif(wrk.available() is None,
                               reason="wrk is not installed (Debian: apt-get install wrk)")

NASTY = ['say "hi"', "back\\slash", "new\nline\r\n", "tab\t", "Flabébé ♀ 🃏", "]]", "]==]",
         "[[long]]", "\x00nul", "%d %s %%", "end'quote"]


def unlua(literal: str) -> bytes:
    """The bytes a Lua string literal made by `lua_string` stands for (its two forms:
    a printable ASCII byte, or a three-digit decimal escape)."""
    assert literal[0] == literal[-1] == '"' and len(literal) >= 2
    out = bytearray()
    body, i = literal[1:-1], 0
    while i < len(body):
        if body[i] == "\\":
            out.append(int(body[i + 1:i + 4]))
            i += 4
        else:
            assert body[i] not in '"\\\n' and 0x20 <= ord(body[i]) < 0x7F, body[i]
            out.append(ord(body[i]))
            i += 1
    return bytes(out)


def test_lua_string_keeps_every_byte_and_nothing_can_end_it() -> None:
    for text in [*NASTY, "", "plain"]:
        literal = wrk.lua_string(text)
        assert unlua(literal) == text.encode()
        assert "\n" not in literal  # a quoted literal: only ", \ and newlines could end it
    every = bytes(range(256))
    assert unlua(wrk.lua_string(every)) == every


def _op(name: str, weight: float) -> Operation:
    counter = iter(range(1_000_000))
    return Operation(name, weight,
                     lambda rng: Request("GET", f"/{name}/{next(counter)}",
                                         params={"r": str(rng.random())}))


def test_plan_keeps_the_weights_proportions_and_is_repeatable() -> None:
    weights = mix.parse_mix(mix.DEFAULT_MIX)
    ops = [_op(name, w) for name, w in weights.items()]
    planned = wrkmix.plan(ops, count=2000, seed=3)
    assert len(planned) == 2000
    assert Counter(p.op for p in planned) == {"search": 800, "lookup": 600, "identify": 400,
                                              "capture": 100, "inventory": 100}
    # shuffled, not in blocks: every operation shows up in the first tenth
    assert {p.op for p in planned[:200]} == set(weights)
    assert wrkmix.shares([_op("a", 1), _op("b", 1), _op("c", 1)], 10) == {"a": 4, "b": 3,
                                                                           "c": 3}
    again = wrkmix.plan([_op(name, w) for name, w in weights.items()], count=2000, seed=3)
    assert [p.target for p in again] == [p.target for p in planned]


def test_encode_is_what_httpx_sends() -> None:
    body = {"name": NASTY, "hp": 120}
    p = wrkmix.encode("identify", Request("POST", "/v1/identify", json=body,
                                          headers={"Authorization": "Bearer t0k"}))
    assert p.method == "POST" and p.target == "/v1/identify" and p.item is None
    assert p.body is not None and json.loads(p.body) == body
    assert dict(p.headers) == {"Authorization": "Bearer t0k",
                               "Content-Type": "application/json"}
    q = wrkmix.encode("search", Request("GET", "/v1/cards",
                                        params={"q": 'name:"Mr. Mime" é', "pageSize": "20"}))
    assert q.target == "/v1/cards?q=name%3A%22Mr.+Mime%22+%C3%A9&pageSize=20"
    assert q.body is None and q.headers == ()
    c = wrkmix.encode("inventory", Request("PATCH", "/v1/inventory/items/42",
                                           json={"location": "x"},
                                           headers={"If-Match": '"7"'}))
    assert (c.item, c.etag) == (42, '"7"')
    assert all(k.lower() != "if-match" for k, _ in c.headers)


# -- the script run by wrk ---------------------------------------------------------------------

@dataclass
class Recorder:
    """A keep-alive HTTP/1.1 server that records what it is sent and keeps versioned items:
    a PATCH of /items/N must name N's version in If-Match (412 otherwise) and gets
    the next version as its ETag."""

    versions: dict[int, int]
    seen: list[tuple[int, str, str, dict[str, str], bytes]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {k.lower(): v for k, _, v in
                           (line.partition(": ") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append((conn, method, target, headers, body))
                status, extra, answer = 200, "", b"{}"
                item = re.fullmatch(r"/items/(\d+)", target)
                if method == "PATCH" and item:
                    n = int(item.group(1))
                    if headers.get("if-match") != f'"{self.versions[n]}"':
                        status, answer = 412, b"{}"
                    else:
                        self.versions[n] += 1
                        extra = f'etag: "{self.versions[n]}"\r\n'
                        answer = b'{"data":{"id":%d,"version":%d}}' % (n, self.versions[n])
                self.statuses[status] += 1
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\n"
                             f"{extra}\r\n".encode() + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def recording(versions: dict[int, int]) -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder(versions)
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.close()
        await server.wait_closed()


@needs_wrk
@pytest.mark.parametrize("connections", [2, 6])
async def test_the_script_under_wrk_sends_the_plan(connections: int) -> None:
    """With 2 connections, one a thread: where each thread starts. With 6, three in flight
    per thread for its two items, half the plan updates: no item is updated twice at
    once."""
    raw = [wrkmix.Planned("post", "POST", f"/echo/{i}", (("Content-Type", "text/plain"),),
                          text.encode()) for i, text in enumerate(NASTY)]
    gets = [wrkmix.encode("get", Request("GET", f"/get/{i}", params={"q": f'"{i}" é'}))
            for i in range(40)]
    items = {n: 1 for n in range(100, 104)}
    moves = [wrkmix.encode("move", Request("PATCH", f"/items/{n}", json={"location": "a\"b"},
                                           headers={"If-Match": '"1"', "X-Token": "t"}))
             for n in items] * 12
    planned = raw + moves + gets
    random.Random(1).shuffle(planned)
    half = len(planned) // 2  # where the second thread starts: a plain GET there, and at 0
    plain_at = [i for i, p in enumerate(planned) if p.op == "get"]
    for spot, i in zip((0, half), plain_at[-2:], strict=True):
        planned[spot], planned[i] = planned[i], planned[spot]
    lua = wrkmix.script(planned, threads=2)
    async with recording(dict(items)) as (url, recorder):
        out, _ = await wrk.execute(url, lua, connections=connections, duration_s=1,
                                   threads=2)
    figures = wrkmix.parse(out)
    assert figures.requests > len(planned), out  # the plan went round at least once
    assert figures.errors == 0 and set(figures.statuses) == {200}, (figures, out)
    assert sum(figures.statuses.values()) == figures.requests
    assert recorder.statuses == {200: len(recorder.seen)}
    if connections == 2:  # each thread (one connection each) began at its own offset
        first = {conn: target for conn, _, target, _, _ in reversed(recorder.seen)}
        assert sorted(first.values()) == sorted([planned[0].target, planned[half].target])
    # every plain request arrived byte for byte as planned
    plain = {(p.method, p.target): p for p in planned if p.item is None}
    for _, method, target, headers, body in recorder.seen:
        if method == "PATCH":
            assert headers["x-token"] == "t" and json.loads(body) == {"location": 'a"b'}
            continue
        p = plain[(method, target)]
        assert body == (p.body or b"")
        assert all(headers[k.lower()] == v for k, v in p.headers)
    # the items were updated, each from the version the last answer gave (no 412 above);
    # the run ends with each item's version, but for those in flight (one a connection)
    assert sum(recorder.versions.values()) > len(items)
    assert len(figures.etags) >= len(items) - connections
    assert all(tag == f'"{recorder.versions[n]}"' for n, tag in figures.etags.items())
