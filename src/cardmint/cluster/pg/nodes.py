"""Making one node's data directory: initdb or a template copy, configuration, base backup.

Settings every node shares go to `cardmint.conf`; what differs per node (port, name)
to `cardmint-node.conf`; replication settings of a standby to `postgresql.auto.conf`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cardmint.cluster.pg import backrest, process, roles, tls
from cardmint.cluster.pg.pgbin import PgBin
from cardmint.cluster.pg.process import OsUser
from cardmint.cluster.pg.roles import literal
from cardmint.cluster.state import REPLICATION, Node
from cardmint.errors import ClusterError

COMMON_CONF = """\
# Written by `cardmint cluster up`; per-node settings are in cardmint-node.conf.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
max_connections = 200
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
# A promote that races a WAL wait otherwise takes 5 s (the default).
wal_retrieve_retry_interval = '500ms'
archive_mode = on
archive_timeout = 60
# pgBackRest's archive-push (asynchronous): into every repository of the cluster home.
archive_command = '{archive_command}'
shared_preload_libraries = 'pg_stat_statements'
track_io_timing = on
log_line_prefix = '%m [%p] %q%u@%d '
log_checkpoints = on
log_min_duration_statement = 1000
# Machine-readable server log for `cardmint cluster logs` and `stats`, rotated by size and
# age, in the data directory's log/ (file names carry the node's name: pg_basebackup and
# pg_rewind copy that directory). Start-up messages still reach logs/<node>.log.
logging_collector = on
log_destination = 'jsonlog'
log_directory = 'log'
log_timezone = 'UTC'
log_rotation_age = '1d'
log_rotation_size = '10MB'
"""

HBA = f"""\
# Written by `cardmint cluster up`: SCRAM passwords only; TLS optional on loopback and
# required from any other address (should listen_addresses ever include one).
# TYPE   DATABASE     USER   ADDRESS        METHOD
host     all          all    127.0.0.1/32   scram-sha-256
host     replication  {REPLICATION}  127.0.0.1/32   scram-sha-256
hostssl  all          all    all            scram-sha-256
hostssl  replication  {REPLICATION}  all            scram-sha-256
"""


def conf_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def locale() -> str:
    """C.UTF-8 keeps sorting bytewise yet lets pg_trgm see é as a letter; plain C does not."""
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()
    except OSError:
        return "C"
    return "C.UTF-8" if any(n.lower() in ("c.utf8", "c.utf-8") for n in names) else "C"


# 1 MB WAL segments, not 16: a promotion copies and fsyncs the current segment onto the
# new timeline, and that copy was most of the promote step (drill, this machine: promote
# median ~110 ms -> ~47 ms, write outage ~150 ms -> ~90 ms). The price is 16 times as
# many archive_command runs per MB of WAL, a few ms each.
WAL_SEGMENT_MB = 1


def initdb(pg: PgBin, user: OsUser, datadir: Path, superuser_password: str, *,
           sync: bool = True) -> None:
    """A new data directory with data checksums and SCRAM authentication."""
    user.own(datadir)
    with tempfile.TemporaryDirectory() as tmp:
        user.own(Path(tmp))
        pwfile = Path(tmp) / "pw"
        write(user, pwfile, superuser_password + "\n")
        argv = [
            pg("initdb"), "-D", str(datadir), "-U", "postgres", "--pwfile", str(pwfile),
            "--auth=scram-sha-256", "--data-checksums", "--encoding=UTF8",
            f"--locale={locale()}", "--no-instructions", f"--wal-segsize={WAL_SEGMENT_MB}",
        ]
        user.run([*argv, *([] if sync else ["--no-sync"])])


def copy_template(user: OsUser, template: Path, datadir: Path) -> None:
    """Copy a template data directory (ten times faster than initdb), keeping owners."""
    if not (template / "PG_VERSION").is_file():
        raise ClusterError(f"{template} is not a PostgreSQL data directory")
    if datadir.exists():
        shutil.rmtree(datadir)
    subprocess.run(["cp", "-a", str(template), str(datadir)], check=True)
    user.own(datadir)


def set_superuser_password(pg: PgBin, user: OsUser, datadir: Path, verifier: str) -> None:
    """Give a template's copy its own superuser password, in single-user mode: no port
    is open until every password is this cluster's own."""
    user.run(
        [pg("postgres"), "--single", "-D", str(datadir), "postgres"],
        input=f"ALTER ROLE postgres PASSWORD {literal(verifier)}\n",
    )


RESOURCES_CONF = "cardmint-resources.conf"  # `cluster resize`: memory/CPU-derived settings


def include_resources(user: OsUser, datadir: Path) -> None:
    """Include the resources file last (its settings win), if it is there."""
    main = datadir / "postgresql.conf"
    text = main.read_text()
    line = f"include_if_exists = '{RESOURCES_CONF}'"
    if line not in text:
        write(user, main, text.rstrip("\n") + f"\n{line}\n")


def common_conf(archive: Path) -> str:
    """The settings every node shares (the Patroni engine hands them to Patroni);
    `archive` is the cluster home's pgBackRest directory."""
    conf = COMMON_CONF.format(archive_command=backrest.archive_command(archive).replace(
        "'", "''"))
    tls_dir = archive.parent / "tls"  # the cluster home's certificates, when it has them
    if (tls_dir / "server.crt").exists():
        conf += tls.server_conf(tls_dir)
    return conf


def configure(user: OsUser, node: Node, archive: Path) -> None:
    """Write the shared and per-node settings and the HBA rules into `node`'s directory."""
    datadir = Path(node.datadir)
    main = datadir / "postgresql.conf"
    text = main.read_text()
    if "include_if_exists = 'cardmint.conf'" not in text:
        text += "\ninclude_if_exists = 'cardmint.conf'\ninclude_if_exists = 'cardmint-node.conf'\n"
        write(user, main, text)
    write(user, datadir / "cardmint.conf", common_conf(archive))
    write(user, datadir / "cardmint-node.conf",
          f"port = {node.port}\ncluster_name = {conf_string('cardmint-' + node.name)}\n"
          f"log_filename = {conf_string(node.name + '-%Y%m%d-%H%M%S.log')}\n")
    write(user, datadir / "pg_hba.conf", HBA)
    include_resources(user, datadir)


def base_backup(pg: PgBin, user: OsUser, primary: Node, replica: Node, password: str) -> None:
    """Clone the primary into `replica`'s directory, creating its replication slot."""
    datadir = Path(replica.datadir)
    if datadir.exists():
        shutil.rmtree(datadir)
    user.own(datadir)
    user.run(
        [pg("pg_basebackup"), "-D", str(datadir), "-h", primary.host, "-p", str(primary.port),
         "-U", REPLICATION, "--no-password", "-X", "stream", "-C", "-S", replica.slot,
         "-c", "fast"],
        env={"PGPASSWORD": password},
    )


def write(user: OsUser, path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file the server user owns (the server rewrites some of them itself). Its
    mode and owner are set before a byte is written: a password file is never readable
    by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its old mode through O_TRUNC
        if user.switching:
            os.fchown(fd, user.uid, user.gid)
        with os.fdopen(fd, "w", closefd=False) as out:
            out.write(text)
    finally:
        os.close(fd)


async def start(pg: PgBin, user: OsUser, node: Node, log: Path,
                stuck_after: float | None = None) -> int:
    """Start `node`'s postmaster (logging start-up to `log`) and wait until it accepts
    connections; its PID. `stuck_after`: see `process.wait_ready`."""
    datadir = Path(node.datadir)
    # A postmaster.pid whose process is gone (or is someone else) would block startup.
    if (datadir / "postmaster.pid").exists() and process.postmaster_pid(datadir) is None:
        (datadir / "postmaster.pid").unlink()
    log.parent.mkdir(parents=True, exist_ok=True)
    pid = user.spawn([pg("postgres"), "-D", str(datadir)], log)
    await process.wait_ready(datadir, pid, log, stuck_after=stuck_after)
    return pid


def make_template(pg: PgBin, user: OsUser, template: Path) -> None:
    """A template data directory: initdb once, then every cluster copies it."""
    staging = template.with_name(template.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    initdb(pg, user, staging, roles.new_password(), sync=False)
    staging.rename(template)
