"""`cardmint security rotate` on Fly: the runbook's rotation (ALTER USER, then
`flyctl secrets set DATABASE_URL=... -a APP`), without its two hazards.

The new password never appears in SQL (a SCRAM verifier computed here is sent) nor on a
command line (flyctl reads the secret from stdin). A new login proves it before the
application is told; if that login fails, the role gets its exact old verifier back from
pg_authid, so nothing changes. The operator's own DSN (CARDMINT_ADMIN_URL, usually through
`flyctl proxy`) must hold a superuser; rotating that very role is refused without --show,
which would otherwise lock the operator out.
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
from cardmint.dsn import username, with_password, with_user
from cardmint.errors import UsageError, ValidationError
from cardmint.ops.maintenance import require_window
from cardmint.ops.security.rotate import RotateReport, Rotation, alter_sql

FLY_PG_PORT = 5432


def app_url(settings: Settings, role: str, password: str, database: str) -> str:
    """The DATABASE_URL a Fly application uses: the database app's private .flycast name."""
    return (f"postgres://{role}:{password}@{settings.fly_app}.flycast:{FLY_PG_PORT}/"
            f"{database}")


async def rotate_fly(settings: Settings, roles: list[str] | None, *, force: bool = False,
                     show: bool = False, now: datetime | None = None,
                     fly: FlyCluster | None = None) -> RotateReport:
    """Rotate each role on the Fly database; for the application's role (the user of
    CARDMINT_DATABASE_URL) set DATABASE_URL on CARDMINT_FLY_CONSUMER_APP."""
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
            rotation = await _rotate_one(settings, admin, admin_dsn, role, now)
            if rotation.ok and role == app_user and settings.fly_consumer_app:
                database = urlsplit(app_dsn).path.lstrip("/") or "postgres"
                await fly.set_secret(settings.fly_consumer_app, "DATABASE_URL",
                                     app_url(settings, role, rotation.password or "", database))
                rotation.detail += f"; DATABASE_URL set on {settings.fly_consumer_app}"
            if not report.record(rotation, show=show):
                break
    report.duration_s = round(time.perf_counter() - began, 3)
    return report


async def _rotate_one(settings: Settings, admin: asyncpg.Connection, admin_dsn: str,
                      role: str, now: datetime | None) -> Rotation:
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
        old = row["rolpassword"]
        until_was = row["rolvaliduntil"]
        await admin.execute(
            f"ALTER ROLE {roles.ident(role)} PASSWORD "
            f"{'NULL' if old is None else roles.literal(old)} VALID UNTIL "
            + roles.literal("infinity" if until_was is None else until_was.isoformat()))
        return Rotation(role, False, None, round(time.perf_counter() - began, 3),
                        f"verification failed, old password restored: {exc}")
    return Rotation(role, True, until, round(time.perf_counter() - began, 3), "verified",
                    password=new)

