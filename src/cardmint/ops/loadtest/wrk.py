"""wrk (Debian's package) on one URL: the reference a Python load generator is held to.

wrk is C on epoll: if httpx's throughput on the same route comes close to wrk's, the
server, not the generator, sets the pace. Loopback only, bounded by -d, stopped by PID.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from typing import Any
from urllib.parse import urlsplit

from cardmint.errors import ConfigError
from cardmint.ops.loadtest.loadgen import check_loopback

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def available() -> str | None:
    return shutil.which("wrk")


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)], 3)


def parse(text: str) -> dict[str, Any]:
    """Requests/s, the latency distribution (p50/p75/p90/p99, and p95 from our Lua hook)
    and errors."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        text)
    latency = {f"p{m.group(1)}_ms": _ms(m.group(2))
               for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.MULTILINE)}
    p95 = re.search(r"^CARDMINT p95_us=(\d+)", text, re.MULTILINE)
    if p95:
        latency["p95_ms"] = round(int(p95.group(1)) / 1000, 3)
    return {"requests": int(total.group(1)) if total else 0,
            "rps": float(rps.group(1)) if rps else 0.0,
            "errors": (int(non2xx.group(1)) if non2xx else 0)
            + (sum(int(x) for x in sockets.groups()) if sockets else 0),
            **latency}


# Cycles through the given paths and prints the p95 that wrk's own summary leaves out.
LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  io.write(string.format("CARDMINT p95_us=%%d\\n", latency:percentile(95)))
end
"""


def script(paths: list[str]) -> str:
    """The Lua script for `paths` (URL-encoded already: no quote or backslash in them)."""
    if not paths or any('"' in p or "\\" in p or "\n" in p for p in paths):
        raise ValueError("paths must be non-empty and URL-encoded")
    return LUA % ", ".join(f'"{p}"' for p in paths)


def lua_string(value: str | bytes) -> str:
    """A Lua string literal of exactly `value`'s bytes (text as UTF-8): printable ASCII as
    is, and `"`, `\\` and every other byte as a decimal escape, so nothing in a body or
    header (quotes, backslashes, newlines, `]]`, UTF-8) can end the literal or alter it."""
    data = value.encode() if isinstance(value, str) else value
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:03d}"
                         for b in data) + '"'


async def execute(url: str, lua_text: str, *, connections: int, duration_s: int,
                  threads: int) -> tuple[str, int]:
    """wrk's output and PID for one run of `lua_text` against `url`. The script goes into a
    0600 temp file (it may hold a token), never onto wrk's command line; wrk is killed
    by PID if it overruns its duration."""
    check_loopback(url)
    binary = available()
    if binary is None:
        raise ConfigError("wrk is not installed (Debian: apt-get install wrk; `make bench` "
                          "installs it)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="cardmint-wrk-") as lua:
        lua.write(lua_text)
        lua.flush()
        argv = [binary, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
                "--latency", "--timeout", "10s", "-s", lua.name, url]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), duration_s + 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return out.decode(errors="replace"), proc.pid


async def run(url: str, *, connections: int, duration_s: int, threads: int = 2,
              paths: list[str] | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """wrk against `url` (or, cycling, `paths` on it) for `duration_s`; with the p95 from
    its Lua hook. `headers` (a token, say) go into the Lua script."""
    threads = max(1, min(threads, connections))
    lua = ("".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}\n"
                   for k, v in (headers or {}).items())
           + script(paths or [urlsplit(url).path or "/"]))
    out, _ = await execute(url, lua, connections=connections, duration_s=duration_s,
                           threads=threads)
    return {"threads": threads, "connections": connections, "duration_s": duration_s,
            **parse(out)}
