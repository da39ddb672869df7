"""What the Patroni engine hands Patroni and etcd: pure functions, no processes.

PostgreSQL gets the very settings the local engine writes (`nodes.common_conf`: WAL
archive, jsonlog, pg_stat_statements, loopback only...) and the same SCRAM-only HBA, here
as Patroni parameters: Patroni owns postgresql.conf on its nodes and rewrites it.
Settings every node must share go to the DCS part of the bootstrap (Patroni applies those
cluster-wide and refuses local overrides of some), per-node ones to the member's file.

Files are written as JSON, the subset of YAML that Patroni's YAML reader accepts, so we
need no YAML library; they hold passwords, so they are mode 0600 and owned by the OS
user Patroni runs as.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cardmint.cluster.pg import nodes
from cardmint.cluster.state import REPLICATION, SUPERUSER

# Patroni refuses a ttl below 20 s and a loop_wait below 1 s or a retry_timeout below 3 s,
# and needs loop_wait + 2 * retry_timeout <= ttl. An unplanned failover waits for the
# leader key to expire (ttl), so the ttl is the floor of the write outage.
TTL_S = 20
LOOP_WAIT_S = 1
RETRY_TIMEOUT_S = 3
# Up to 1 MiB of WAL behind, a replica may still be promoted by an asynchronous failover
# (Patroni's default); with synchronous_mode only the synchronous standby is.
MAXIMUM_LAG_ON_FAILOVER = 1_048_576
SCOPE = "cardmint"
NAMESPACE = "/cardmint/"
REST_USER = "cardmint"
REST_SECRET = "CARDMINT_PATRONI_REST_PASSWORD"  # key in secrets.env
HOST = "127.0.0.1"

# Patroni sets these itself: from `listen` and the scope.
PATRONI_OWNED = ("listen_addresses", "port", "cluster_name")


def parse_conf(text: str) -> dict[str, str]:
    """`key = value` lines of a postgresql.conf fragment, quoted values unquoted."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("''", "'").replace("\\\\", "\\")
        out[key] = value
    return out


def shared_parameters(archive: Path) -> dict[str, str]:
    """The local engine's shared settings, minus those Patroni sets itself."""
    params = parse_conf(nodes.common_conf(archive))
    return {k: v for k, v in params.items() if k not in PATRONI_OWNED}


def node_parameters(name: str) -> dict[str, str]:
    """What differs per node: the server log's file name carries the node's name (the
    log directory is copied by base backups and pg_rewind)."""
    return {"log_filename": f"{name}-%Y%m%d-%H%M%S.log"}


def hba_lines() -> list[str]:
    """The local engine's pg_hba.conf rules: SCRAM only, TLS required beyond loopback."""
    return [line for line in nodes.HBA.splitlines() if line.strip() and not line.startswith("#")]


def dcs_config(archive: Path, *, sync: bool, strict: bool) -> dict[str, Any]:
    """Cluster-wide settings Patroni keeps in the DCS (read once, at bootstrap)."""
    return {
        "ttl": TTL_S,
        "loop_wait": LOOP_WAIT_S,
        "retry_timeout": RETRY_TIMEOUT_S,
        "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
        # Patroni names the synchronous standby itself; strict: commits wait rather than
        # go on asynchronously while no standby is there (CARDMINT_SYNC_STRICT)
        "synchronous_mode": sync,
        "synchronous_mode_strict": sync and strict,
        "postgresql": {
            "use_pg_rewind": True,  # data checksums and wal_log_hints make it possible
            "use_slots": True,
            "parameters": shared_parameters(archive),
        },
    }


def member_config(*, name: str, datadir: Path, bindir: Path, pg_port: int, rest_port: int,
                  etcd_hosts: list[str], passwords: dict[str, str], rest_password: str,
                  pgpass: Path, log_dir: Path, archive: Path, sync: bool, strict: bool,
                  host: str = HOST) -> dict[str, Any]:
    """One member's Patroni configuration."""
    superuser = {"username": SUPERUSER, "password": passwords[SUPERUSER]}
    return {
        "scope": SCOPE,
        "namespace": NAMESPACE,
        "name": name,
        # Patroni logs a line per loop (every second): to files it rotates itself
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s",
                "dir": str(log_dir), "file_size": 10_485_760, "file_num": 4},
        "restapi": {
            "listen": f"{host}:{rest_port}",
            "connect_address": f"{host}:{rest_port}",
            # switchover, failover, restart and reinitialize need these credentials
            "authentication": {"username": REST_USER, "password": rest_password},
        },
        "etcd3": {"hosts": etcd_hosts, "protocol": "http"},
        "bootstrap": {
            "dcs": dcs_config(archive, sync=sync, strict=strict),
            "initdb": ["data-checksums", {"encoding": "UTF8"}, {"locale": nodes.locale()},
                       {"auth": "scram-sha-256"}, {"wal-segsize": str(nodes.WAL_SEGMENT_MB)}],
        },
        "postgresql": {
            "listen": f"{host}:{pg_port}",
            "connect_address": f"{host}:{pg_port}",
            "data_dir": str(datadir),
            "bin_dir": str(bindir),
            "pgpass": str(pgpass),
            "use_unix_socket": False,
            "authentication": {
                "superuser": superuser,
                "replication": {"username": REPLICATION, "password": passwords[REPLICATION]},
                "rewind": superuser,
            },
            "parameters": node_parameters(name),
            "pg_hba": hba_lines(),
            "create_replica_methods": ["basebackup"],
            "basebackup": [{"checkpoint": "fast"}],
        },
        "watchdog": {"mode": "off"},  # no /dev/watchdog here; etcd's ttl fences instead
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False,
                 "nosync": False},
    }


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def etcd_argv(etcd: str, datadir: Path, client_port: int, peer_port: int,
              host: str = HOST) -> list[str]:
    """A single-member etcd on loopback: the DCS of a one-machine Patroni cluster."""
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    return [
        etcd, "--name", "cardmint", "--data-dir", str(datadir),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"cardmint={peer}", "--initial-cluster-state", "new",
        "--initial-cluster-token", "cardmint",
        "--log-outputs", "stderr", "--logger", "zap",
    ]


def bootstrap_sql(cluster_sql: list[str]) -> list[str]:
    """The local engine's role statements for a Patroni cluster: Patroni made the
    replication role already (it needs it to clone replicas), so it is altered, not
    created; its password becomes our client-side SCRAM verifier like every other."""
    prefix = f"CREATE ROLE {REPLICATION} "
    return [f"ALTER ROLE {REPLICATION} " + s[len(prefix):].replace("LOGIN REPLICATION ", "", 1)
            if s.startswith(prefix) else s for s in cluster_sql]
