"""`cardmint security rotate` on Fly: the runbook's rotation (ALTER USER, then
`flyctl secrets set DATABASE_URL=... -a APP`), without its hazards.

The new password never appears in SQL (a SCRAM verifier computed here is sent) nor on a
command line (flyctl reads the secret from stdin, quoted so a `#` cannot cut it). For the
application's role the steps run in this order, each bounded:

1. the new password is set and proved by a new login (if that fails, the role gets its
   exact old verifier back from pg_authid: nothing changed);
2. DATABASE_URL is staged on CARDMINT_FLY_CONSUMER_APP (`secrets import --stage`: no
   machine restarts); if that fails the old verifier goes back too;
3. the app's machines restart with it (`secrets deploy`), within the longest rolling
   restart flyctl may run (`waits.Waits.deploy_s`). `secrets import` without --stage
   would do both at once and could be cut off after the password changed; if the deploy
   fails or is cut off, the rotation says so with the command that finishes it;
4. a login with the old password must be refused.

The operator's own DSN (CARDMINT_ADMIN_URL, usually through `flyctl proxy`) must hold a
superuser; rotating that very role is refused without --show, which would otherwise
lock the operator out.
"""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg

from cardmint.cluster.fly.engine import FlyCluster
from cardmint.cluster.pg import roles
from cardmint.config import Settings, secret
from cardmint.db.connect import connection
from cardmint.dsn import password_of, username, with_password, with_user
from cardmint.errors import CardmintError, DatabaseError, UsageError, ValidationError
from cardmint.ops.maintenance import require_window
from cardmint.ops.security.rotate import RotateReport, Rotation, alter_sql

FLY_PG_PORT = 5432  # the app's proxy port: it leads to the primary
INVALID_PASSWORD = "28P01"


def app_url(settings: Settings, role: str, password: str, database: str) -> str:
    """The DATABASE_URL a Fly application uses: the database app's private .flycast name."""
    return (f"postgres://{role}:{password}@{settings.fly_app}.flycast:{FLY_PG_PORT}/"
            f"{database}")


async def rotate_fly(settings: Settings, roles: list[str] | None, *, force: bool = False,
                     show: bool = False, now: datetime | None = None,
                     fly: FlyCluster | None = None) -> RotateReport:
    """Rotate each role on the Fly database; for the application's role (the user of
    CARDMINT_DATABASE_URL) stage and deploy DATABASE_URL on CARDMINT_FLY_CONSUMER_APP."""
    require_window("credential rotation", force=force, now=now)
    admin_dsn = secret(settings.admin_url)
    if not admin_dsn:
        raise UsageError("rotation on Fly needs CARDMINT_ADMIN_URL: a superuser DSN to the "
                         f"database app (e.g. through `flyctl proxy 5433:5432 -a "
                         f"{settings.fly_app}`)")
    if not roles:
        raise UsageError("on Fly name the roles to rotate with --role (e.g. --role postgres)")
    admin_user = username(admin_dsn)
    if admin_user in roles and not show:
        raise UsageError(f"rotating {admin_user}, the role of CARDMINT_ADMIN_URL, would lock "
                         "you out: add --show to be given its new password")
    app_dsn = secret(settings.database_url) or ""
    app_user = username(app_dsn) if app_dsn else None
    fly = fly or FlyCluster.from_settings(settings)
    began = time.perf_counter()
    report = RotateReport(ok=True)
    async with connection(admin_dsn, settings, application="cardmint-rotate") as admin:
        for role in roles:
            rotation, old = await _rotate_one(settings, admin, admin_dsn, role, now)
            if rotation.ok and role == app_user and settings.fly_consumer_app:
                told = time.perf_counter()
                await _tell_the_app(settings, fly, admin, admin_dsn, rotation, old,
                                    password_of(app_dsn))
                rotation.duration_s = round(rotation.duration_s + time.perf_counter() - told,
                                            3)
            if not report.record(rotation, show=show):
                break
    report.duration_s = round(time.perf_counter() - began, 3)
    return report


async def _tell_the_app(settings: Settings, fly: FlyCluster, admin: asyncpg.Connection,
                        admin_dsn: str, rotation: Rotation, old: asyncpg.Record,
                        old_password: str | None) -> None:
    """Steps 2-4 for the application's role; `rotation` says how far they went."""
    consumer = settings.fly_consumer_app or ""
    role = rotation.role
    database = urlsplit(secret(settings.database_url) or "").path.lstrip("/") or "postgres"
    url = app_url(settings, role, rotation.password or "", database)
    try:
        await fly.stage_secret(consumer, "DATABASE_URL", url)
    except CardmintError as exc:
        await _put_back(admin, role, old)
        rotation.ok = False
        rotation.detail = (f"staging DATABASE_URL on {consumer} failed, old password "
                           f"restored: {exc}. If flyctl staged it all the same, rotate again "
                           f"before {consumer}'s next deploy")
        return
    rotation.detail += f"; DATABASE_URL staged on {consumer}"
    deploy_began = time.perf_counter()
    try:
        machines = await fly.deploy_secrets(consumer)
    except CardmintError as exc:
        rotation.ok = False
        rotation.detail += (f"; the database has the new password but the deploy did not "
                            f"finish: {exc}")
        return
    rotation.detail += (f"; {machines} machine(s) of {consumer} restarted with it in "
                        f"{time.perf_counter() - deploy_began:.1f} s" if machines else
                        f"; {consumer} has no machines: its next deploy takes it")
    if old_password is None:
        rotation.detail += "; the old password is not known here, so not tried"
        return
    try:
        async with connection(with_password(with_user(admin_dsn, role), old_password),
                              settings, application="cardmint-rotate") as conn:
            await conn.fetchval("SELECT 1")
    except DatabaseError as exc:
        if exc.sqlstate == INVALID_PASSWORD:
            rotation.detail += "; old password refused"
            return
        rotation.ok = False
        rotation.detail += f"; could not check that the old password is refused: {exc}"
        return
    rotation.ok = False
    rotation.detail += "; the OLD password still logs in: check pg_hba.conf (trust?)"


async def _rotate_one(settings: Settings, admin: asyncpg.Connection, admin_dsn: str,
                      role: str, now: datetime | None) -> tuple[Rotation, asyncpg.Record]:
    began = time.perf_counter()
    row = await admin.fetchrow("SELECT rolpassword, rolvaliduntil, rolcanlogin FROM pg_authid "
                               "WHERE rolname = $1", role)
    if row is None or not row["rolcanlogin"]:
        raise ValidationError(f"{role!r} is not a login role on {settings.fly_app}",
                              field="role")
    new = roles.new_password()
    until = roles.valid_until(now)
    await admin.execute(alter_sql(role, new, until))
    try:  # a new login, as the role, where the operator reaches the database
        async with connection(with_password(with_user(admin_dsn, role), new), settings,
                              application="cardmint-rotate") as conn:
            await conn.fetchval("SELECT 1")
    except Exception as exc:  # put back exactly what was there: the old verifier
        await _put_back(admin, role, row)
        return Rotation(role, False, None, round(time.perf_counter() - began, 3),
                        f"verification failed, old password restored: {exc}"), row
    return Rotation(role, True, until, round(time.perf_counter() - began, 3), "verified",
                    password=new), row


async def _put_back(admin: asyncpg.Connection, role: str, row: asyncpg.Record) -> None:
    old = row["rolpassword"]
    until_was = row["rolvaliduntil"]
    await admin.execute(
        f"ALTER ROLE {roles.ident(role)} PASSWORD "
        f"{'NULL' if old is None else roles.literal(old)} VALID UNTIL "
        + roles.literal("infinity" if until_was is None else until_was.isoformat()))
