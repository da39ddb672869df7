"""Settings: connection strings, pool sizes, timeouts and every runbook threshold.

Read, highest priority first, from keyword arguments, the environment (`CARDMINT_*`) and
a `.env` file in the working directory. The DSNs those leave unset come from the
cluster's state: `cluster.state.with_topology(settings)` fills them from
`$CARDMINT_HOME/cluster.json` (passwords from `secrets.env`) and attaches the `Topology`
the data layer follows after a failover. Connection strings are `SecretStr`, so printing
the settings never shows a password; `describe()` gives a redacted view for people.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cardmint.dsn import redact
from cardmint.errors import ConfigError, NoCluster

SECRETS_FILE = "secrets.env"


class Topology(Protocol):
    """Where the cluster's nodes are now, as the data layer follows it (the cluster's
    state gives one; settings made from the environment alone have none)."""

    def replica_dsns(self) -> list[str] | None:
        """The replicas' DSNs with passwords, or None when they cannot be read now."""

    def pooler_ports(self) -> set[int]:
        """Ports where a connection pooler (PgBouncer) listens before the primary."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CARDMINT_", env_file=".env", extra="ignore", validate_default=True
    )
    _topology: Topology | None = PrivateAttr(default=None)

    # Where the local cluster lives and how it is run.
    home: Path = Path(".cardmint")
    # The engine behind `cardmint cluster ...`: unset, cluster.json says (local or patroni,
    # as `cluster up --engine` made it); "fly" drives the Fly Postgres app `fly_app` with
    # flyctl, and `security rotate` then sets DATABASE_URL on `fly_consumer_app` if given.
    provider: Literal["local", "patroni", "fly"] | None = None
    fly_app: str = "cardmint-db"
    fly_consumer_app: str | None = None
    flyctl: str = "flyctl"
    pg_bindir: Path | None = None
    # The Patroni engine: the venv holding Patroni and patronictl (`make patroni`; the
    # postgres OS user must be able to read it) and etcd, its DCS (Debian's etcd-server).
    patroni_bin: Path = Path(__file__).resolve().parents[2] / ".venv-patroni" / "bin"
    etcd: str = "etcd"
    pg_os_user: str = "postgres"
    # TLS: the operator's certificate, key and CA; unset, `cluster up` makes its own.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    # A data directory to copy instead of running initdb (made on first use).
    pg_template: Path | None = None

    # Card pictures from TCGdex's asset host (assets.tcgdex.net) on the pages; false shows
    # placeholders and keeps the host out of the pages' Content-Security-Policy.
    remote_images: bool = True

    # Connections. Unset DSNs come from the local cluster's state.
    database_url: SecretStr | None = None  # primary, application role (DML only)
    replica_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    migration_url: SecretStr | None = None  # primary, owner role (DDL)
    readonly_url: SecretStr | None = None  # any node, read-only role
    admin_url: SecretStr | None = None  # primary, superuser: cluster operations only
    # One DSN per node, role with pg_monitor: health, stats and the monitor ask each node.
    monitor_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Pool and timeouts (the runbook's pool: 5-20 connections via asyncpg).
    pool_min: int = Field(5, ge=0)
    pool_max: int = Field(20, ge=1)
    replica_pool_max: int = Field(20, ge=1)
    connect_timeout_s: float = Field(5.0, gt=0)
    statement_timeout_ms: int = Field(10_000, ge=0)
    pool_acquire_timeout_s: float = Field(2.0, gt=0)
    replica_check_interval_s: float = Field(1.0, gt=0)
    # After a write, this context reads from the primary for this long (read-your-writes).
    read_after_write_s: float = Field(2.0, ge=0)

    # Runbook thresholds: normal below warn, alert above critical.
    latency_p95_warn_ms: float = 100.0
    latency_p95_critical_ms: float = 150.0
    pool_utilization_warn_pct: float = 80.0
    pool_utilization_critical_pct: float = 90.0
    replica_lag_warn_s: float = 10.0
    replica_lag_critical_s: float = 30.0
    storage_warn_pct: float = 70.0
    storage_critical_pct: float = 85.0
    # Scaling triggers.
    pgbouncer_connections: int = 100
    read_replica_read_write_ratio: float = 5.0
    scale_cpu_pct: float = 75.0
    scale_cpu_for_min: float = 15.0
    scale_memory_pct: float = 85.0
    scale_memory_for_min: float = 10.0
    scale_latency_p95_ms: float = 100.0
    scale_latency_for_min: float = 5.0
    uptime_target_pct: float = 99.9
    # Health checks beyond the runbook's four metrics.
    storage_capacity_bytes: int | None = None  # default: the data directory's filesystem
    backup_age_warn_h: float = 26.0  # a daily backup, with slack
    backup_age_critical_h: float = 50.0
    long_transaction_warn_s: float = 60.0
    long_transaction_critical_s: float = 300.0
    idle_in_transaction_warn_s: float = 30.0
    idle_in_transaction_critical_s: float = 300.0
    archive_backlog_warn_s: float = 300.0  # oldest segment still waiting to be archived
    health_probe_queries: int = Field(40, ge=1, le=10_000)
    # `cardmint monitor`: its round interval (a gap over 2.5 intervals breaks a sustained
    # condition), how long samples are kept, and where alert transitions are POSTed.
    monitor_interval_s: float = Field(60.0, gt=0)
    monitor_retention_h: float = Field(24.0, gt=0)
    # The monitor inside `cardmint serve` restarts a local node whose postmaster died
    # (issue 18), looking this often; 0 turns it off.
    heal_interval_s: float = Field(5.0, ge=0)
    alert_webhook_url: SecretStr | None = None  # may carry a token in its path

    # Backups (issue 6): a base backup every `backup_interval_h`, kept `backup_retention_days`
    # but never fewer than `backup_min_keep`; bounded waits for the archiver and a restore.
    backup_interval_h: float = Field(24.0, gt=0)
    backup_retention_days: float = Field(7.0, gt=0)
    backup_min_keep: int = Field(2, ge=1)
    # past pgBackRest's archive-timeout (60 s): an archive-push that waited in vain for its
    # asynchronous process fails then, and the archiver's retry pushes the segment
    backup_archive_wait_s: float = Field(90.0, gt=0)
    restore_timeout_s: float = Field(300.0, gt=0)

    # Synchronous replication (issue 5): commits waiting on a synchronous standby, or no
    # such standby streaming, for this long make the sync guard drop to asynchronous and
    # raise a P1 alert; with `sync_strict` it only alerts (commits wait for the standby).
    sync_degrade_after_s: float = Field(5.0, gt=0)
    sync_strict: bool = False
    sync_guard_interval_s: float = Field(0.5, gt=0)

    # The HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_max_body_bytes: int = Field(1_048_576, ge=1024)  # larger bodies get a 413
    # Catalog answers kept per server process (catalog/cache.py); 0 turns the cache off.
    catalog_cache_mb: int = Field(64, ge=0, le=4096)
    # An inventory file (TCGplayer, Collectr, Dragon Shield) to import, by the API or the
    # page: streamed to a temporary file, so the limit is disk, not memory (64 MiB ~ 500k rows).
    api_max_import_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: addresses or networks,
    # comma-separated. Empty (the default), no forwarded header is believed: the failure
    # limiter keys on the connection's own address and the cookie's Secure flag on its own
    # scheme, so a client cannot choose either by sending a header.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Login roles `security audit` accepts besides CardMint's (e.g. Fly's flypgadmin,repmgr).
    audit_known_roles: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Card photos (cardmint.scan): stored content-addressed under `image_dir` (default
    # `$CARDMINT_HOME/images`; in production a volume), refused above these limits.
    image_dir: Path | None = None
    image_max_bytes: int = Field(20_000_000, ge=10_000)
    image_max_pixels: int = Field(50_000_000, ge=10_000)
    ocr_threads: int = Field(1, ge=1, le=64)  # per OCR call; the server runs one at a time

    @field_validator("replica_urls", "monitor_urls", "trusted_proxies", "audit_known_roles",
                     mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry[:60]!r} is not an address or "
                                 "network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) exceeds pool_max ({self.pool_max})")
        pairs = [
            ("latency_p95", self.latency_p95_warn_ms, self.latency_p95_critical_ms),
            ("pool_utilization", self.pool_utilization_warn_pct,
             self.pool_utilization_critical_pct),
            ("replica_lag", self.replica_lag_warn_s, self.replica_lag_critical_s),
            ("storage", self.storage_warn_pct, self.storage_critical_pct),
        ]
        for name, warn, critical in pairs:
            if warn > critical:
                raise ValueError(f"{name}: warn threshold {warn} exceeds critical {critical}")
        return self

    # -- the cluster's files and topology --------------------------------------------

    @property
    def secrets_path(self) -> Path:
        return self.home / SECRETS_FILE

    def no_cluster(self) -> NoCluster:
        """The error for a command that found no cluster where these settings point."""
        home = self.home if self.home.is_absolute() else Path(".") / self.home
        shown = str(home) if home.is_absolute() else f"./{self.home}"
        return NoCluster(f"no cluster at {shown}: set CARDMINT_HOME or --home to the "
                         "cluster's home (or CARDMINT_DATABASE_URL for a database elsewhere); "
                         "`cardmint cluster up` makes a new cluster there")

    @property
    def images_path(self) -> Path:
        return self.image_dir if self.image_dir is not None else self.home / "images"

    def owner_dsn(self) -> str:
        """The owner role's DSN (migrations, catalog loads), or why there is none."""
        return self.required_dsn(self.migration_url, "owner DSN", "CARDMINT_MIGRATION_URL")

    def required_dsn(self, value: SecretStr | None, what: str, variable: str) -> str:
        """`value`'s DSN; without it, no cluster here at all or, with others, which one."""
        if value is not None and value.get_secret_value():
            return value.get_secret_value()
        if self.database_url is None:  # nothing configured at all: the wrong home
            raise self.no_cluster()
        raise ConfigError(f"no {what}: set {variable}")

    @property
    def topology(self) -> Topology | None:
        """What `cluster.state.with_topology` attached, for the data layer to follow."""
        return self._topology

    def with_topology(self, topology: Topology | None, **dsns: Any) -> Settings:
        """A copy with `topology` attached and the given DSN fields set."""
        copy = self.model_copy(update=dsns)
        copy._topology = topology
        return copy

    def describe(self) -> dict[str, Any]:
        """Every setting, with passwords masked: safe to print or log."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                plain = value.get_secret_value()
                # a DSN keeps its shape with the password masked; other secrets show nothing
                value = redact(plain) if plain.startswith("postgres") else "***"
            elif isinstance(value, list):
                value = [redact(v.get_secret_value()) if isinstance(v, SecretStr) else v
                         for v in value]
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def admin_or_owner_dsn(settings: Settings) -> str:
    """The superuser's DSN, else the owner's: what needs the tables' owner (or more)."""
    dsn = secret(settings.admin_url)
    return dsn or settings.required_dsn(settings.migration_url, "admin or owner DSN",
                                     "CARDMINT_ADMIN_URL")


def secret(value: SecretStr | None) -> str | None:
    """The plain text of an optional secret (for handing to a driver, never to a log)."""
    return value.get_secret_value() if value is not None else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests build their own `Settings(...)` instead."""
    return Settings()
