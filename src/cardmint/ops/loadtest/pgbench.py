"""`cardmint loadtest pgbench`: the runbook's weekly `pgbench -c 20 -j 4 -T 300 -S`, judged
against the p95 SLA.

pgbench runs against the primary (the admin DSN's read-write host) on its own dataset in
its own database, `cardmint_pgbench`: created once as the superuser and initialised once
with `pgbench -i -s N`, then re-used (again only when another scale is asked for). It never
touches the application's database. pgbench reports the average latency; the p95 comes
from its per-transaction log, written to a temporary directory and read back here.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cardmint import inputs
from cardmint.cluster.pg import pgbin
from cardmint.cluster.state import load as load_state
from cardmint.config import Settings
from cardmint.db.connect import connection
from cardmint.dsn import password_of, redact
from cardmint.errors import ClusterError, ConfigError, UsageError

DATABASE = "cardmint_pgbench"
DEFAULT_SCALE = 10  # 1,000,000 accounts, ~150 MB: fits shared memory, like the catalog
INIT_LOCK_KEY = 7_204_315_118  # serialises two runs that would both initialise
FULL_LOG_S = 60  # longer runs log a sample of transactions, about as many as 60 s would
PROTOCOLS = ("simple", "extended", "prepared")
_EXTRA_S = 120  # pgbench's own start-up and vacuum on top of -T, before it is killed


@dataclass(frozen=True)
class PgbenchOptions:
    clients: int = 20
    jobs: int = 4
    duration_s: int = 300
    select_only: bool = True
    scale: int | None = None  # None: the dataset's scale, or DEFAULT_SCALE when there is none
    protocol: str = "simple"
    log_latency: bool = True  # per-transaction log for the percentiles

    def check(self) -> None:
        if not 1 <= self.clients <= 1000:
            raise UsageError("--clients must be between 1 and 1000")
        if not 1 <= self.jobs <= self.clients:
            raise UsageError("--jobs must be between 1 and --clients")
        if not 1 <= self.duration_s <= 86_400:
            raise UsageError("--duration must be between 1 and 86400 seconds")
        if self.scale is not None and not 1 <= self.scale <= 10_000:
            raise UsageError("--scale must be between 1 and 10000")
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}")


# -- where pgbench connects -------------------------------------------------------------------

def admin_dsn(settings: Settings, database: str = DATABASE) -> str:
    """The superuser DSN (multi-host, read-write: the primary) on `database`."""
    dsn = settings.required_dsn(settings.admin_url, "superuser DSN (pgbench needs its own "
                                "database)", "CARDMINT_ADMIN_URL")
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def without_password(dsn: str) -> str:
    """The DSN for pgbench's argv: the password goes through PGPASSWORD, never argv."""
    parts = urlsplit(dsn)
    if "@" not in parts.netloc:
        return dsn
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def target_of(dsn: str) -> str:
    return urlsplit(dsn).netloc.rsplit("@", 1)[-1]


def pgbench_binary(settings: Settings) -> str:
    """pgbench from the cluster's bindir (the server's own version), else the one found."""
    state = load_state(settings.home)
    candidates = []
    if state is not None:
        candidates.append(Path(state.bindir) / "pgbench")
    try:
        candidates.append(pgbin.find(settings.pg_bindir).bindir / "pgbench")
    except ClusterError:
        pass
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which("pgbench")
    if found:
        return found
    raise ConfigError("pgbench not found (Debian: apt-get install postgresql-15, or set "
                      "CARDMINT_PG_BINDIR)")


def pgbench_env(dsn: str) -> dict[str, str]:
    env = {**os.environ, "PGAPPNAME": "cardmint-loadtest"}
    password = password_of(dsn)
    if password:
        env["PGPASSWORD"] = password
    return env


# -- the dataset ------------------------------------------------------------------------------

async def ensure_dataset(settings: Settings, scale: int | None,
                         binary: str) -> dict[str, Any]:
    """Create and initialise the pgbench database if it is missing or another scale is
    asked for; otherwise leave it as it is. Returns its scale and what was done."""
    async with connection(admin_dsn(settings, "postgres"), settings,
                          application="cardmint-loadtest") as admin:
        await admin.execute("SELECT pg_advisory_lock($1)", INIT_LOCK_KEY)
        try:
            exists = await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1",
                                          DATABASE)
            if not exists:
                await admin.execute(f"CREATE DATABASE {DATABASE}")
                # nobody but the superuser needs it (the audit looks for PUBLIC grants)
                await admin.execute(f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC")
            current = await _current_scale(settings)
            wanted = scale or current or DEFAULT_SCALE
            if current == wanted:
                return {"scale": current, "initialised": False, "init_s": None}
            began = time.perf_counter()
            await _run([binary, "-i", "-q", "-s", str(wanted),
                        without_password(admin_dsn(settings))],
                       pgbench_env(admin_dsn(settings)), timeout=600 + 60 * wanted)
            return {"scale": wanted, "initialised": True,
                    "init_s": round(time.perf_counter() - began, 3)}
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", INIT_LOCK_KEY)


async def _current_scale(settings: Settings) -> int | None:
    """pgbench's scale is the number of branches; None if it was never initialised."""
    async with connection(admin_dsn(settings), settings,
                          application="cardmint-loadtest") as conn:
        if await conn.fetchval("SELECT to_regclass('public.pgbench_accounts')") is None:
            return None
        return await conn.fetchval("SELECT count(*) FROM pgbench_branches") or None


# -- running pgbench ----------------------------------------------------------------------------

async def _run(argv: list[str], env: dict[str, str], *, timeout: float,
               cwd: str | None = None) -> tuple[int, str, str]:
    """Run a program to its end or the timeout; stopped by PID on every way out."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd or "/", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise ClusterError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") \
            from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    code = proc.returncode or 0
    if argv[1:2] == ["-i"] and code != 0:
        raise ClusterError(f"pgbench -i exited {code}: {redact(err.decode()[-2000:])}")
    return code, out.decode(), err.decode()


def sampling_rate(duration_s: int) -> float:
    return 1.0 if duration_s <= FULL_LOG_S else round(FULL_LOG_S / duration_s, 4)


def command(binary: str, dsn: str, opts: PgbenchOptions, log_prefix: Path | None) -> list[str]:
    argv = [binary, "-c", str(opts.clients), "-j", str(opts.jobs), "-T", str(opts.duration_s),
            "-M", opts.protocol]
    if opts.select_only:
        argv.append("-S")
    if log_prefix is not None:
        argv += ["--log", f"--log-prefix={log_prefix}",
                 f"--sampling-rate={sampling_rate(opts.duration_s)}"]
    return [*argv, without_password(dsn)]


_FIGURES = {
    "tps": r"^tps = ([\d.]+) \(without initial connection time\)",
    "latency_avg_ms": r"^latency average = ([\d.]+) ms",
    "latency_stddev_ms": r"^latency stddev = ([\d.]+) ms",
    "transactions": r"^number of transactions actually processed: (\d+)",
    "failed": r"^number of failed transactions: (\d+)",
    "connection_ms": r"^initial connection time = ([\d.]+) ms",
}


def parse_summary(text: str) -> dict[str, float | int | None]:
    """The figures pgbench prints at its end (None for any it did not print)."""
    out: dict[str, float | int | None] = {}
    for key, pattern in _FIGURES.items():
        m = re.search(pattern, text, re.MULTILINE)
        value = None if m is None else m.group(1)
        out[key] = (None if value is None
                    else int(value) if inputs.is_digits(value) else float(value))
    return out


def parse_logs(paths: list[Path]) -> tuple[Counter[int], int]:
    """Latencies (µs -> count) of the logged transactions, and how many failed or were
    skipped. A line: client_id transaction_no time script_no epoch_s epoch_us."""
    latencies: Counter[int] = Counter()
    failed = 0
    for path in paths:
        with open(path) as f:
            for line in f:
                fields = line.split(None, 3)
                if len(fields) < 3:
                    continue
                if inputs.is_digits(fields[2]):
                    latencies[int(fields[2])] += 1
                else:  # "failed" or "skipped"
                    failed += 1
    return latencies, failed


def read_logs(workdir: Path | None) -> tuple[Counter[int], int]:
    return parse_logs(sorted(workdir.glob("tx.*")) if workdir is not None else [])


def quantiles_ms(latencies: Counter[int], qs: tuple[float, ...] = (0.5, 0.95, 0.99)
                 ) -> dict[str, float | None]:
    """Exact quantiles (nearest rank) of µs latencies, in ms, plus the maximum."""
    total = sum(latencies.values())
    out: dict[str, float | None] = {f"p{round(q * 100)}": None for q in qs}
    out["max"] = None
    if not total:
        return out
    ordered = sorted(latencies.items())
    ranks = sorted((max(1, math.ceil(q * total - 1e-9)), f"p{round(q * 100)}") for q in qs)
    seen, i = 0, 0
    for value, n in ordered:
        seen += n
        while i < len(ranks) and seen >= ranks[i][0]:
            out[ranks[i][1]] = round(value / 1000, 3)
            i += 1
    out["max"] = round(ordered[-1][0] / 1000, 3)
    return out


def verdict(p95_ms: float | None, failed: int, exit_code: int,
            settings: Settings) -> str:
    if exit_code != 0 or failed or p95_ms is None:
        return "critical"
    if p95_ms < settings.latency_p95_warn_ms:
        return "ok"
    return "warn" if p95_ms < settings.latency_p95_critical_ms else "critical"


async def run_pgbench(settings: Settings, opts: PgbenchOptions) -> dict[str, Any]:
    """Initialise the dataset if needed, run pgbench, and judge its p95 against the SLA."""
    opts.check()
    binary = pgbench_binary(settings)
    dataset = await ensure_dataset(settings, opts.scale, binary)
    dsn = admin_dsn(settings)
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="cardmint-pgbench-"))
    try:
        prefix = workdir / "tx" if opts.log_latency else None
        code, out, err = await _run(command(binary, dsn, opts, prefix), pgbench_env(dsn),
                                    timeout=opts.duration_s + _EXTRA_S, cwd=str(workdir))
        summary = parse_summary(out)
        # a 300 s run logs millions of lines: read them off the event loop
        latencies, failed_logged = await asyncio.to_thread(
            read_logs, workdir if prefix is not None else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures = quantiles_ms(latencies)
    failed = int(summary["failed"] or 0)
    status = verdict(figures["p95"] if opts.log_latency else summary["latency_avg_ms"],
                     failed, code, settings)
    report: dict[str, Any] = {
        "ok": status == "ok", "status": status, "started_at": started.isoformat(),
        "target": target_of(dsn), "database": DATABASE, "pgbench": binary, **dataset,
        "clients": opts.clients, "jobs": opts.jobs, "duration_s": opts.duration_s,
        "select_only": opts.select_only, "protocol": opts.protocol,
        "transactions": summary["transactions"], "failed": failed, "tps": summary["tps"],
        "connection_ms": summary["connection_ms"],
        "latency_ms": {"avg": summary["latency_avg_ms"],
                       "stddev": summary["latency_stddev_ms"],
                       "p50": figures["p50"], "p95": figures["p95"], "p99": figures["p99"],
                       "max": figures["max"]},
        "sampling_rate": sampling_rate(opts.duration_s) if opts.log_latency else None,
        "logged_transactions": sum(latencies.values()) + failed_logged,
        "sla": {"p95_warn_ms": settings.latency_p95_warn_ms,
                "p95_critical_ms": settings.latency_p95_critical_ms},
        "exit_code": code,
    }
    if code != 0:
        report["error"] = redact(err.strip()[-2000:]) or f"pgbench exited {code}"
    return report
