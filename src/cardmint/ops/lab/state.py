"""A lab's record: its hosts (lab.json) and secrets (secrets.env, mode 0600), found
again by every command and observer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from cardmint import secretfile
from cardmint.cluster.patroni import conf
from cardmint.cluster.state import APP, SUPERUSER
from cardmint.errors import UsageError
from cardmint.ops.lab.net import Host

DATABASE = "cardmint"
PG_PORT, REST_PORT, ETCD_CLIENT, ETCD_PEER = 5432, 8008, 2379, 2380
STATE = "lab.json"
SECRETS = "secrets.env"
ENV_FILE = "lab.env"
REST_SECRET = conf.REST_SECRET


@dataclass
class LabHost:
    """One host of a lab, as lab.json keeps it."""

    name: str
    index: int
    netns: str
    address: str
    datadir: str
    socket_dir: str
    config: str
    etcd_dir: str

    @property
    def host(self) -> Host:
        return Host(self.index)

    @property
    def rest(self) -> str:
        return f"http://{self.address}:{REST_PORT}"


@dataclass
class Lab:
    """A lab's home and hosts; `up` makes one, `load` finds it again."""

    home: str
    sync: bool
    hosts: list[LabHost] = field(default_factory=list)
    bindir: str = ""
    created_at: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.home)

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise UsageError(f"no lab host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")

    def passwords(self) -> dict[str, str]:
        return secretfile.read(self.path / SECRETS)

    def rest_auth(self) -> tuple[str, str]:
        return conf.REST_USER, self.passwords().get(REST_SECRET, "")

    def log(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"

    def patroni_log(self, host: LabHost) -> Path:
        return self.path / "logs" / f"patroni-{host.name}" / "patroni.log"

    def dsn(self, role: str = APP, database: str = DATABASE) -> str:
        """Multi-host, read-write: what the application is given (README's step 5)."""
        hosts = ",".join(f"{h.address}:{PG_PORT}" for h in self.hosts)
        password = self.passwords()[role]
        return (f"postgresql://{role}:{quote(password)}@{hosts}/{database}"
                "?target_session_attrs=read-write")

    async def connect(self, host: LabHost, *, database: str = "postgres",
                      timeout: float = 2.0) -> asyncpg.Connection:
        """The superuser on `host`'s member through its unix socket (works while the
        host is partitioned)."""
        return await asyncpg.connect(host=host.socket_dir, port=PG_PORT, user=SUPERUSER,
                                     password=self.passwords()[SUPERUSER], database=database,
                                     timeout=timeout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quote(text: str) -> str:
    """`text` as it may stand in a DSN's password."""
    from urllib.parse import quote as escape

    return escape(text, safe="")


def load(home: Path) -> Lab | None:
    try:
        data = json.loads((home / STATE).read_text())
    except FileNotFoundError:
        return None
    hosts = [LabHost(**h) for h in data.pop("hosts")]
    return Lab(hosts=hosts, **data)


def save(lab: Lab) -> None:
    tmp = lab.path / (STATE + ".tmp")
    tmp.write_text(json.dumps(lab.to_dict(), indent=2) + "\n")
    tmp.replace(lab.path / STATE)


