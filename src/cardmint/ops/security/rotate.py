"""`cardmint security rotate`: the runbook's quarterly credential rotation, with zero
downtime.

For each role: a new random password, stored as a SCRAM verifier with VALID UNTIL about
100 days ahead; a new connection proves it; the secrets file is rewritten atomically;
if the proof fails, the old password is put back. Open sessions are unaffected (the
server checks passwords only when connecting), and CardMint's pools pick the new
password from the secrets file the first time a new connection is refused
(the data layer reloads it), so requests never fail. What else runs with a password
follows it through the engine (`apply_password`, `credentials_saved`): on the local
engine the pooler's auth file and the replicas' primary_conninfo, on Patroni its
configuration. Fly's rotation is `ops/security/fly.py`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from cardmint import secretfile
from cardmint.cluster.engine import Managed
from cardmint.cluster.pg import roles
from cardmint.cluster.provider import open_managed
from cardmint.cluster.state import REPLICATION, ROLES, SUPERUSER, Node
from cardmint.config import Settings
from cardmint.errors import ClusterError, ValidationError
from cardmint.ops.maintenance import require_window


@dataclass
class Rotation:
    role: str
    ok: bool
    valid_until: str | None
    duration_s: float
    detail: str = ""
    password: str | None = None  # only with --show

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["password"] is None:
            del data["password"]
        return data


@dataclass
class RotateReport:
    ok: bool
    rotations: list[Rotation] = field(default_factory=list)
    duration_s: float = 0.0

    def record(self, rotation: Rotation, *, show: bool) -> bool:
        """Keep `rotation` (its password only with --show); False once one failed: the
        rotation stops there."""
        if not show:
            rotation.password = None
        self.rotations.append(rotation)
        self.ok = self.ok and rotation.ok
        return rotation.ok

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "duration_s": self.duration_s,
                "rotations": [r.to_dict() for r in self.rotations]}


async def rotate(settings: Settings, roles: list[str] | None = None, *, force: bool = False,
                 show: bool = False, now: datetime | None = None) -> RotateReport:
    """Rotate `roles` (default: every login role of the cluster), one at a time; stop at
    the first that cannot be verified, after putting its old password back."""
    require_window("credential rotation", force=force, now=now)
    wanted = roles or list(ROLES)
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise ValidationError(f"unknown role(s) {', '.join(unknown)}; CardMint manages "
                              f"{', '.join(ROLES)}", field="role")
    cluster = open_managed(settings, "this rotation")
    if cluster.state() is not None:
        await cluster.refresh()  # Patroni may have moved the leader by itself
    state = cluster.state()
    if state is None:
        raise settings.no_cluster()
    began = time.perf_counter()
    passwords = cluster.passwords()
    admin = await _connect(state.primary, SUPERUSER, passwords[SUPERUSER], "postgres")
    # the verifiers are not passwords, but the monitoring role reads pg_stat_statements
    await admin.execute("SET pg_stat_statements.track_utility = off")
    report = RotateReport(ok=True)
    try:
        for role in wanted:
            rotation = await _rotate_one(cluster, admin, role, passwords, now)
            if not report.record(rotation, show=show):
                break
    finally:
        await admin.close()
    report.duration_s = round(time.perf_counter() - began, 3)
    return report


async def _rotate_one(cluster: Managed, admin: asyncpg.Connection, role: str,
                      passwords: dict[str, str], now: datetime | None) -> Rotation:
    began = time.perf_counter()
    state = cluster.state()
    assert state is not None
    old_until = await admin.fetchval("SELECT rolvaliduntil FROM pg_authid WHERE rolname = $1",
                                     role)
    new = roles.new_password()
    until = roles.valid_until(now)
    await admin.execute(alter_sql(role, new, until))
    try:
        await _verify(cluster, role, new)
        await cluster.apply_password(role, new)
    except (ClusterError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
        old_until_sql = "infinity" if old_until is None else old_until.isoformat()
        await admin.execute(alter_sql(role, passwords[role], old_until_sql))
        await cluster.apply_password(role, passwords[role])
        return Rotation(role, False, None, _since(began),
                        f"verification failed, old password restored: {exc}")
    path = cluster.settings.secrets_path
    secretfile.write(path, {**secretfile.read(path), secretfile.role_key(role): new})
    passwords[role] = new
    detail = "verified" + await cluster.credentials_saved(role)
    return Rotation(role, True, until, _since(began), detail, password=new)


def alter_sql(role: str, password: str, until: str) -> str:
    verifier = roles.scram_verifier(password)
    return (f"ALTER ROLE {roles.ident(role)} PASSWORD "
            f"{roles.literal(verifier)} VALID UNTIL {roles.literal(until)}")


async def _verify(cluster: Managed, role: str, password: str) -> None:
    """A new connection with the new password, as that role would make it."""
    state = cluster.state()
    assert state is not None
    if role == REPLICATION:
        await asyncio.to_thread(_replication_login, state.bindir, state.primary, password)
        return
    database = "postgres" if role == SUPERUSER else state.database
    conn = await _connect(state.primary, role, password, database)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _replication_login(bindir: str, primary: Node, password: str) -> None:
    """asyncpg cannot open a replication connection; psql can, and IDENTIFY_SYSTEM is the
    smallest thing to ask on one."""
    conninfo = (f"host={primary.host} port={primary.port} user={REPLICATION} "
                "dbname=replication replication=true")
    done = subprocess.run(
        [str(Path(bindir) / "psql"), "-X", "-At", "-c", "IDENTIFY_SYSTEM", conninfo],
        capture_output=True, text=True, timeout=30, cwd="/",
        env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"})
    if done.returncode != 0:
        raise ClusterError(f"replication login refused: {done.stderr.strip()[-300:]}")


async def _connect(node: Node, user: str, password: str, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(host=node.host, port=node.port, user=user, password=password,
                                 database=database, timeout=10,
                                 server_settings={"application_name": "cardmint-rotate"})


def _since(began: float) -> float:
    return round(time.perf_counter() - began, 3)

