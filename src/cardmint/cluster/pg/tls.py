"""TLS for the cluster: a CA made here (or the operator's files), and a server
certificate for 127.0.0.1 and localhost, so clients can use sslmode=verify-full.

Keys are EC P-256: quick to make and to handshake. The CA key stays with the invoking
user (mode 0600); the server key belongs to the PostgreSQL OS user, as the server insists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cardmint.cluster.pg.process import OsUser
from cardmint.errors import ClusterError

CA_DAYS = 3650
SERVER_DAYS = 825  # what browsers accept; the server certificate is renewed before then
NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True,
                       timeout=60)
    except FileNotFoundError:
        raise ClusterError("openssl is needed to make the cluster's certificates "
                           "(Debian: apt-get install openssl)") from None
    except subprocess.CalledProcessError as exc:
        raise ClusterError(f"openssl {args[0]} failed: {exc.stderr.strip()[-300:]}") from None


def ensure(tls_dir: Path, user: OsUser, *, cert: Path | None = None, key: Path | None = None,
           ca: Path | None = None) -> Path:
    """The certificate files under `tls_dir` (made once; the operator's if given)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls_dir.chmod(0o755)
    server_crt, server_key, ca_crt = (tls_dir / n for n in ("server.crt", "server.key",
                                                            "ca.crt"))
    if cert and key:
        copy(cert, server_crt, 0o644)
        copy(key, server_key, 0o600)
        if ca:
            copy(ca, ca_crt, 0o644)
    elif not (server_crt.exists() and server_key.exists() and ca_crt.exists()):
        _make(tls_dir)
    server_crt.chmod(0o644)
    if ca_crt.exists():
        ca_crt.chmod(0o644)
    server_key.chmod(0o600)
    if user.switching:
        os.chown(server_key, user.uid, user.gid)
    return tls_dir


def copy(source: Path, dest: Path, mode: int) -> None:
    """`source` to `dest`, created with `mode` before a byte is written (a key is never
    readable by others, not even for a moment; the umask can only narrow it) and
    replaced atomically. A pipe works too (`--tls-key-file <(vault read ...)`)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _make(tls_dir: Path) -> None:
    ca_key = tls_dir / "ca.key"
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "server.csr"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(ca_key), "-out", str(tls_dir / "ca.crt"),
                 "-days", str(CA_DAYS), "-subj", "/CN=CardMint local CA")
        ca_key.chmod(0o600)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(tls_dir / "server.key"), "-out", str(csr),
                 "-subj", "/CN=localhost", "-addext", NAMES)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(tls_dir / "ca.crt"),
                 "-CAkey", str(ca_key), "-CAcreateserial", "-out",
                 str(tls_dir / "server.crt"), "-days", str(SERVER_DAYS), "-copy_extensions",
                 "copy")
    (tls_dir / "ca.srl").unlink(missing_ok=True)


def server_conf(tls_dir: Path) -> str:
    return (f"ssl = on\nssl_cert_file = '{tls_dir / 'server.crt'}'\n"
            f"ssl_key_file = '{tls_dir / 'server.key'}'\n"
            "ssl_min_protocol_version = 'TLSv1.2'\n")


def issue(tls_dir: Path, dest: Path, name: str, *, cn: str, alt_names: str) -> tuple[Path, Path]:
    """A certificate `name`.crt/.key in `dest`, signed by the CA of `tls_dir` (the one
    made here: its key is needed), e.g. for pgBackRest's repository host and client.
    `alt_names` as openssl writes them: "IP:10.232.0.2" or "DNS:client"."""
    ca_key, ca_crt = tls_dir / "ca.key", tls_dir / "ca.crt"
    if not ca_key.exists():
        raise ClusterError(f"{ca_key} is missing: certificates for other hosts are signed "
                           "only by the CA made here")
    dest.mkdir(parents=True, exist_ok=True)
    crt, key = dest / f"{name}.crt", dest / f"{name}.key"
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / f"{name}.csr"
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
                 "-addext", f"subjectAltName={alt_names}")
        key.chmod(0o600)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                 "-CAserial", str(Path(tmp) / "ca.srl"), "-CAcreateserial", "-out", str(crt),
                 "-days", str(SERVER_DAYS), "-copy_extensions", "copy")
    crt.chmod(0o644)
    return crt, key
