"""The application mix driven by wrk: the requests the httpx mix sends, precomputed from
the same builders and cycled by wrk's threads from a generated Lua script.

Why: on 2 shared cores our Python generator reaches 0.12-0.15 of wrk's rate on one route,
so the p95 it measures is mostly its own queue; wrk (C, epoll) leaves the cores to the
server.

The plan: `count` requests, each operation's share in its weight's proportion, in an
order shuffled with a fixed seed, each built by the operation's own builder and encoded
by httpx as the httpx mix sends it (path and query, headers, JSON body). Each wrk thread
cycles through the plan from its own offset, so the threads do not send the same request
at the same moment.

Conditional requests (with If-Match: the inventory updates) cannot be replayed as built,
since each update gives the item a new version. The Lua picks their item when it sends
one: each thread moves only its own share of the items, never one item twice at once, and
takes an item's next If-Match from the ETag of its answer (whose body names the item
first, `{"data":{"id":N`). An item whose update failed is not sent again: its version is
unknown.

wrk measures the mix as a whole: its Lua hooks see no request's latency and cannot match
an answer to its request, so there are no per-operation figures. The Lua counts the
statuses of all answers; errors are the non-2xx answers plus wrk's socket errors.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cardmint.errors import UsageError
from cardmint.ops.loadtest import wrk
from cardmint.ops.loadtest.loadgen import Operation, Request

PLAN_SIZE = 2_000
MAX_PLAN = 10_000  # the plan is one Lua table constructor: LuaJIT caps its constants
THREADS = 2  # one per core of the machines this runs on


@dataclass(frozen=True)
class Planned:
    """One request of the plan, as it goes on the wire."""

    op: str
    method: str
    target: str  # path and query, percent-encoded
    headers: tuple[tuple[str, str], ...]  # without Host and Content-Length (wrk's own)
    body: bytes | None
    item: int | None = None  # a conditional request's item: its path's trailing id
    etag: str | None = None  # ... and the If-Match it was built with


def shares(operations: Sequence[Operation], count: int) -> dict[str, int]:
    """Each operation's number of requests out of `count`, in its weight's proportion
    (largest remainder, so they add up to `count`)."""
    total = sum(op.weight for op in operations)
    if total <= 0:
        raise UsageError("the mix has no weight")
    exact = {op.name: count * op.weight / total for op in operations}
    out = {name: math.floor(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda name: out[name] - exact[name])
    for name in by_remainder[:count - sum(out.values())]:
        out[name] += 1
    return out


def encode(op: str, request: Request) -> Planned:
    """`request` as httpx would send it."""
    wire = httpx.Request(request.method, "http://loadtest" + request.path,
                         params=request.params, json=request.json, headers=request.headers)
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in wire.headers.raw
                    if k.lower() not in (b"host", b"content-length"))
    etag = next((v for k, v in headers if k.lower() == "if-match"), None)
    item = None
    if etag is not None:
        trailing = re.search(r"/(\d+)$", request.path)
        if trailing is None:
            raise ValueError(f"a conditional request needs an item id ending its path: "
                             f"{request.path}")
        item = int(trailing.group(1))
        headers = tuple((k, v) for k, v in headers if k.lower() != "if-match")
    return Planned(op, request.method, wire.url.raw_path.decode("ascii"), headers,
                   wire.content or None, item, etag)


def plan(operations: Sequence[Operation], *, count: int = PLAN_SIZE,
         seed: int = 7) -> list[Planned]:
    """`count` requests from the operations' builders. Building moves the builders' state
    as sending would (an ItemMover thinks its items in flight): plan after, not before,
    driving the same operations with httpx."""
    if not 1 <= count <= MAX_PLAN:
        raise UsageError(f"a wrk plan holds 1 to {MAX_PLAN} requests")
    rng = random.Random(seed)
    order = [op for op in operations for _ in range(shares(operations, count)[op.name])]
    rng.shuffle(order)
    return [encode(op.name, op.build(rng)) for op in order]


def first_etags(planned: Sequence[Planned]) -> dict[int, str]:
    """Each conditional item's version as the plan was built: the Lua's starting point."""
    out: dict[int, str] = {}
    for p in planned:
        if p.item is not None and p.etag is not None:
            out.setdefault(p.item, p.etag)
    return out


LUA = """-- CardMint's application mix for wrk (generated; holds a token: keep it 0600)
local threads = %(threads)d
-- method, target, headers, body, conditional, If-Match as built
local plan = {
%(plan)s
}
-- the conditional items and their ETags; thread t moves those at positions t, t+threads...
local seeds = {
%(seeds)s
}

local started, count = {}, 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  started[#started + 1] = thread
end

local wire, own, turn, i, verifying = {}, {}, 0, 0, false
etags, busy, statuses = {}, {}, {}

function init(args)
  for k, r in ipairs(plan) do
    if not r[5] then wire[k] = wrk.format(r[1], r[2], r[3], r[4]) end
  end
  for p, s in ipairs(seeds) do
    if (p - 1) %% threads == tid then
      own[#own + 1] = s[1]
      etags[s[1]] = s[2]
    end
  end
  i = math.floor(tid * #plan / threads)  -- each thread starts at its own offset
  -- wrk calls the first thread's request() once before the run, to check what it returns
  verifying = tid == 0
end

local function conditional(r, id, etag)
  local h = {["If-Match"] = etag}
  for k, v in pairs(r[3]) do h[k] = v end
  return wrk.format(r[1], (string.gsub(r[2], "%%d+$", tostring(id))), h, r[4])
end

-- the next item of this thread with no update in flight and a known version
local function take()
  for _ = 1, #own do
    turn = turn %% #own + 1
    local id = own[turn]
    if not busy[id] and etags[id] then
      busy[id] = true
      return id
    end
  end
  return nil
end

function request()
  if verifying then  -- not sent: neither the cycle nor an item may move for it
    verifying = false
    local r = plan[1]
    if r[5] then return conditional(r, string.match(r[2], "(%%d+)$"), r[6]) end
    return wire[1]
  end
  for _ = 1, #plan do
    i = i %% #plan + 1
    local r = plan[i]
    if not r[5] then return wire[i] end
    local id = take()
    if id then return conditional(r, id, etags[id]) end
  end
  -- only conditional requests and none of this thread's items free: send one as built
  local r = plan[i]
  return conditional(r, string.match(r[2], "(%%d+)$"), r[6])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local etag = headers["etag"] or headers["ETag"]
  if status == 200 and etag then
    local id = tonumber(string.match(body, '^{"data":{"id":(%%d+)'))
    if id and busy[id] then
      busy[id] = nil
      etags[id] = etag
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("CARDMINT run requests=%%.0f duration_us=%%.0f connect=%%.0f "
    .. "read=%%.0f write=%%.0f timeout=%%.0f\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format("CARDMINT latency_us p50=%%.0f p95=%%.0f p99=%%.0f mean=%%.0f "
    .. "max=%%.0f\\n", latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max))
  for _, t in ipairs(started) do
    for code, n in pairs(t:get("statuses")) do
      io.write(string.format("CARDMINT status %%d=%%d\\n", code, n))
    end
    local held = t:get("busy")
    for id, etag in pairs(t:get("etags")) do
      if not held[id] then io.write(string.format("CARDMINT etag %%d=%%s\\n", id, etag)) end
    end
  end
end
"""


def _lua_request(p: Planned) -> str:
    headers = ("{" + ", ".join(f"[{wrk.lua_string(k)}] = {wrk.lua_string(v)}"
                               for k, v in p.headers) + "}") if p.headers else "nil"
    body = wrk.lua_string(p.body) if p.body is not None else "nil"
    etag = wrk.lua_string(p.etag) if p.etag is not None else "nil"
    return (f"  {{{wrk.lua_string(p.method)}, {wrk.lua_string(p.target)}, {headers}, {body}, "
            f"{'true' if p.item is not None else 'false'}, {etag}}},")


def script(planned: Sequence[Planned], *, threads: int,
           etags: dict[int, str] | None = None) -> str:
    """The Lua script for `planned`, cycled by `threads` threads; `etags` (item -> ETag,
    e.g. what a previous run ended with) replaces the versions the plan was built with,
    and an item missing from it is not updated."""
    if not planned or threads < 1:
        raise ValueError("a plan and at least one thread are needed")
    known = first_etags(planned) if etags is None else etags
    seeds = [f"  {{{item}, {wrk.lua_string(known[item])}}},"
             for item in first_etags(planned) if item in known]
    return LUA % {"threads": threads, "plan": "\n".join(map(_lua_request, planned)),
                  "seeds": "\n".join(seeds)}


@dataclass(frozen=True)
class Figures:
    """What one wrk run of the mix measured."""

    requests: int
    elapsed_s: float
    latency_us: dict[str, float]  # p50, p95, p99, mean, max
    statuses: dict[int, int]  # every answer's status, counted by the Lua
    socket_errors: dict[str, int]  # connect, read, write, timeout
    etags: dict[int, str]  # each conditional item's version at the end (none in flight)

    @property
    def errors(self) -> int:
        return (sum(n for code, n in self.statuses.items() if not 200 <= code < 300)
                + sum(self.socket_errors.values()))

    def total(self) -> dict[str, Any]:
        """The figures under the keys of the httpx mix's `total`."""
        ms = {k: round(v / 1000, 3) for k, v in self.latency_us.items()}
        kinds = {f"status {code}": n for code, n in sorted(self.statuses.items())
                 if not 200 <= code < 300}
        kinds.update({f"socket {k}": n for k, n in self.socket_errors.items() if n})
        return {"requests": self.requests,
                "throughput_rps": round(self.requests / self.elapsed_s, 1)
                if self.elapsed_s > 0 else 0.0,
                "errors": self.errors,
                "error_rate_pct": round(100.0 * self.errors / self.requests, 4)
                if self.requests else 0.0,
                "error_kinds": kinds,
                "mean_ms": ms.get("mean") if self.requests else None,
                **{f"{k}_ms": ms.get(k) if self.requests else None
                   for k in ("p50", "p95", "p99", "max")}}


def parse(text: str) -> Figures:
    """The CARDMINT lines the script's `done` writes."""
    run = re.search(r"^CARDMINT run (.*)$", text, re.MULTILINE)
    latency = re.search(r"^CARDMINT latency_us (.*)$", text, re.MULTILINE)
    if run is None or latency is None:
        raise UsageError(f"wrk did not finish the mix: {text.strip()[-500:]}")
    counts = {k: float(v) for k, v in (kv.split("=") for kv in run.group(1).split())}
    statuses: dict[int, int] = {}
    for code, n in re.findall(r"^CARDMINT status (\d+)=(\d+)$", text, re.MULTILINE):
        statuses[int(code)] = statuses.get(int(code), 0) + int(n)
    return Figures(
        requests=int(counts["requests"]), elapsed_s=counts["duration_us"] / 1e6,
        latency_us={k: float(v) for k, v in (kv.split("=") for kv in latency.group(1).split())},
        statuses=statuses,
        socket_errors={k: int(counts[k]) for k in ("connect", "read", "write", "timeout")},
        etags={int(i): tag for i, tag in
               re.findall(r"^CARDMINT etag (\d+)=(.*)$", text, re.MULTILINE)})


async def drive(url: str, operations: Sequence[Operation], *, connections: int,
                duration_s: float, warmup_s: float = 0.0, threads: int = THREADS,
                count: int = PLAN_SIZE, seed: int = 7) -> dict[str, Any]:
    """The mix by wrk against `url`: a warm-up run (not counted) when `warmup_s` > 0, then
    the measured one, whole seconds each (wrk's unit). The measured run starts from the
    item versions the warm-up ended with."""
    threads = max(1, min(threads, connections))
    planned = plan(operations, count=count, seed=seed)
    etags = None
    if warmup_s > 0:
        out, _ = await wrk.execute(url, script(planned, threads=threads),
                                   connections=connections,
                                   duration_s=max(1, math.ceil(warmup_s)), threads=threads)
        etags = parse(out).etags
    seconds = max(1, math.ceil(duration_s))
    out, pid = await wrk.execute(url, script(planned, threads=threads, etags=etags),
                                 connections=connections, duration_s=seconds, threads=threads)
    figures = parse(out)
    return {"elapsed_s": round(figures.elapsed_s, 3), "pid": pid, "threads": threads,
            "connections": connections, "duration_s": seconds,
            "planned": {"requests": len(planned), "seed": seed,
                        "operations": shares(operations, len(planned))},
            "statuses": {str(k): v for k, v in sorted(figures.statuses.items())},
            "total": figures.total()}
